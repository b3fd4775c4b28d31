"""The continual loop. For each experience: hooks -> Trainer.fit -> a row of R -> hooks.

It lives outside Lightning on purpose: Lightning trains one experience well, while the stream,
the accuracy matrix and the morphs between experiences are the runner's business.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch

from neumeta_cl.data import ExperienceDataModule, TensorStream
from neumeta_cl.metrics import learning_curve_area, steps_to_fraction
from neumeta_cl.runner.evaluation import accuracy_row
from neumeta_cl.runner.hooks import ExperienceHook
from neumeta_cl.runner.probes import LearningCurve, StabilityProbe, StepCounter
from neumeta_cl.strategies import ContinualModule


@dataclass
class RunOutcome:
    R: np.ndarray  # T x T; rows of experiences not reached are NaN
    b: np.ndarray
    experiences: list[dict] = field(default_factory=list)
    status: str = "running"
    reason: str | None = None


def quiet_lightning() -> None:
    """Silence Lightning's per-Trainer banners and hints that do not apply to tensor data."""
    import logging

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                ".*GPU available but not used.*", ".*LeafSpec.*", ".*`isinstance.*treespec.*"):
        warnings.filterwarnings("ignore", message=msg)


def _cache_callback_plugin_scan() -> None:
    """Every ``pl.Trainer()`` scans all installed packages' entry points for callback plugins
    (~15 ms here, 4% of an experience). We build one Trainer per experience, so scan once; only
    an empty result is cached, since plugin factories may expect fresh callback instances.
    """
    from pytorch_lightning.trainer.connectors import callback_connector as cc

    if getattr(cc._load_external_callbacks, "_neumeta_cached", False):
        return
    original, empty = cc._load_external_callbacks, set()

    def load(group: str):
        if group in empty:
            return []
        found = original(group)
        if not found:
            empty.add(group)
        return found

    load._neumeta_cached = True
    cc._load_external_callbacks = load


def pick_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class ContinualRunner:
    def __init__(
        self,
        stream: TensorStream,
        module: ContinualModule,
        *,
        epochs: int = 1,
        batch_size: int = 128,
        seed: int = 0,
        eval_batch_size: int = 1024,
        hooks: list[ExperienceHook] | None = None,
        trainer_kwargs: dict | None = None,
        lca_beta: int = 10,
        curve_every_n_steps: int = 10,
        stability_every_n_steps: int = 0,
        log_fn=None,
        log_every_n_steps: int = 1,
    ):
        self.stream, self.module = stream, module
        self.epochs, self.batch_size, self.seed, self.eval_batch_size = epochs, batch_size, seed, eval_batch_size
        self.hooks = list(hooks or [])
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.lca_beta, self.curve_every_n_steps = lca_beta, curve_every_n_steps
        self.stability_every_n_steps = stability_every_n_steps
        self.log_fn = log_fn
        self.steps = StepCounter(log_fn, log_every_n_steps)
        self.device = pick_device(self.trainer_kwargs.get("accelerator", "auto"))
        T = stream.n_experiences
        self.outcome = RunOutcome(R=np.full((T, T), np.nan), b=np.full(T, np.nan))
        quiet_lightning()
        _cache_callback_plugin_scan()

    # The network may be replaced by a morph between experiences, so always read it from the module.
    @property
    def net(self):
        return self.module.net

    def evaluate(self) -> list[float]:
        self.module.to(self.device)
        return accuracy_row(self.net, self.stream.test, self.eval_batch_size, self.device)

    def _trainer(self, callbacks: list[pl.Callback]) -> pl.Trainer:
        kwargs = dict(enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                      logger=False, enable_progress_bar=False)
        kwargs.update(self.trainer_kwargs)
        return pl.Trainer(max_epochs=self.epochs, callbacks=callbacks, **kwargs)

    def run(self) -> RunOutcome:
        out = self.outcome
        try:
            out.b[:] = self.evaluate()
            for hook in self.hooks:
                hook.on_run_start(self)
            for i in range(self.stream.n_experiences):
                self._experience(i)
            out.status = "completed"
        except KeyboardInterrupt:
            out.status, out.reason = "interrupted", "interrupted by the user (Ctrl-C)"
            raise
        except BaseException as e:
            out.status, out.reason = "failed", str(e) or type(e).__name__
            raise
        finally:
            for hook in self.hooks:
                hook.on_run_end(self)
        return out

    def _experience(self, i: int) -> None:
        for hook in self.hooks:
            hook.on_experience_start(self, i)
        train = self.module.train_experience(self.stream, i)
        self.module.to(self.device)
        self.module.before_experience(train)

        curve = LearningCurve(self.stream.test[i], self.lca_beta, self.curve_every_n_steps, self.eval_batch_size)
        data = ExperienceDataModule(train, self.batch_size, seed=self.seed + 1000 * i)
        callbacks: list[pl.Callback] = [self.steps]
        if self.lca_beta > 0 or self.curve_every_n_steps > 0:  # both 0: the probe is off
            callbacks.append(curve)
        stability = None
        if self.stability_every_n_steps and i > 0:
            stability = StabilityProbe(self.stream.test[:i], self.stability_every_n_steps, self.eval_batch_size)
            callbacks.append(stability)
        for hook in self.hooks:
            callbacks.extend(hook.trainer_callbacks(self, i))
        trainer = self._trainer(callbacks)
        t0 = time.perf_counter()
        trainer.fit(self.module, datamodule=data)
        fit_seconds = time.perf_counter() - t0

        # End-of-experience consolidation (EWC's Fisher, PackNet's prune-and-freeze) belongs to the
        # experience, so the row of R is measured after it.
        self.module.to(self.device)
        self.module.after_experience(train)
        t0 = time.perf_counter()
        row = self.evaluate()
        eval_seconds = time.perf_counter() - t0
        self.outcome.R[i] = row

        steps = int(trainer.global_step)
        probe_seconds = curve.probe_seconds + (stability.probe_seconds if stability else 0.0)
        train_seconds = fit_seconds - probe_seconds
        # The curve's last point is the end of training, at the accuracy that R records.
        curve_steps, curve_accs, curve_secs = curve.steps + [steps], curve.accs + [row[i]], curve.seconds + [train_seconds]
        hit = steps_to_fraction(curve_steps, curve_accs, row[i], 0.95)
        self.outcome.experiences.append({
            "index": i,
            "train_samples": len(train.y),
            "steps": steps,
            "global_step": self.steps.step,
            "train_seconds": train_seconds,
            "probe_seconds": probe_seconds,
            "eval_seconds": eval_seconds,
            "accuracy": row,
            "lca": learning_curve_area(curve.z, self.lca_beta) if curve.z else None,
            "lca_z": curve.z,
            "steps_to_95": hit,
            "seconds_to_95": None if hit is None else curve_secs[curve_steps.index(hit)],
            "curve": {"steps": curve_steps, "accuracy": curve_accs, "seconds": curve_secs},
            "stability": stability.summary() if stability else None,
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "widths": list(getattr(self.net, "widths", [])),
        })
        info = self.module.experience_info()
        record = self.outcome.experiences[-1]
        record["morphs"] = list(info.pop("morphs", []))
        record["strategy"] = info
        for hook in self.hooks:
            hook.on_experience_end(self, i)
