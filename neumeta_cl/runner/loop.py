"""The continual loop. For each experience: plugins -> Trainer.fit -> a row of R -> plugins -> checkpoint.

It lives outside Lightning on purpose: Lightning trains one experience well, while the stream,
the accuracy matrix and the morphs between experiences are the runner's business. The contract
it follows is ``neumeta_cl.protocol``; it imports no strategy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch

from neumeta_cl.data import ExperienceDataModule, TensorExperience, TensorStream
from neumeta_cl.metrics import learning_curve_area, steps_to_fraction
from neumeta_cl.morph.report import flops_per_sample
from neumeta_cl.protocol import ExperienceRecord, Plugin, load_state_of, state_of
from neumeta_cl.runner.checkpoint import rng_state, set_rng_state
from neumeta_cl.runner.evaluation import accuracy_row
from neumeta_cl.runner.probes import LearningCurve, StabilityProbe, StepCounter
from neumeta_cl.runner.signals import GracefulStop, RunInterrupted
from neumeta_cl.runner.trainer import make_trainer
from neumeta_cl.tracking.atomic import jsonable


@dataclass
class RunOutcome:
    R: np.ndarray  # T x T; rows of experiences not reached are NaN
    b: np.ndarray
    records: list[ExperienceRecord] = field(default_factory=list)
    status: str = "running"
    reason: str | None = None
    signal: str | None = None  # SIGTERM / SIGINT when interrupted
    resumed_from: int | None = None  # experiences restored from a checkpoint

    @property
    def experiences(self) -> list[dict]:
        """The records as results.json stores them."""
        return [r.to_dict() for r in self.records]


def pick_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class ContinualRunner:
    """Trains ``strategy`` on ``stream`` and calls ``plugins`` at the events of ``neumeta_cl.protocol``.

    ``checkpoint(state)``, when given, is called with the runner's ``state_dict()`` after every
    experience, inside a section that signals cannot interrupt.
    """

    def __init__(
        self,
        stream: TensorStream,
        strategy,
        plugins: list[Plugin] | None = None,
        *,
        epochs: int = 1,
        batch_size: int = 128,
        seed: int = 0,
        eval_batch_size: int = 1024,
        trainer_kwargs: dict | None = None,
        lca_beta: int = 10,
        curve_every_n_steps: int = 10,
        stability_every_n_steps: int = 0,
        log_fn=None,
        log_every_n_steps: int = 1,
        data_seed_offset: int = 1000,
        checkpoint: Callable[[dict], None] | None = None,
    ):
        self.stream, self.strategy = stream, strategy
        self.plugins: list[Plugin] = list(plugins or [])
        self.epochs, self.batch_size, self.seed, self.eval_batch_size = epochs, batch_size, seed, eval_batch_size
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.lca_beta, self.curve_every_n_steps = lca_beta, curve_every_n_steps
        self.stability_every_n_steps = stability_every_n_steps
        self.data_seed_offset = data_seed_offset
        self.log_fn = log_fn
        self.steps = StepCounter(log_fn, log_every_n_steps)
        self.device = pick_device(self.trainer_kwargs.get("accelerator", "auto"))
        self.checkpoint = checkpoint
        self.stop = GracefulStop()
        T = stream.n_experiences
        self.outcome = RunOutcome(R=np.full((T, T), np.nan), b=np.full(T, np.nan))
        # What the plugins see of the experience in progress (see neumeta_cl.protocol).
        self.index: int = -1
        self.experience: TensorExperience | None = None
        self.record: ExperienceRecord | None = None

    # The network may be replaced by a morph between experiences, so always read it from the strategy.
    @property
    def net(self):
        return self.strategy.net

    def replace_net(self, result) -> None:
        """Adopt a morph's result (``MorphResult``): the new net, with every anchor remapped."""
        self.strategy.replace_net(result.net.to(self.device), result.param_map)

    def evaluate(self) -> list[float]:
        self.strategy.to(self.device)
        return accuracy_row(self.net, self.stream.test, self.eval_batch_size, self.device)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        o = self.outcome
        done = len(o.records)
        return {"next_experience": done, "R": torch.from_numpy(o.R[:done].copy()), "b": torch.from_numpy(o.b.copy()),
                "records": jsonable([r.to_dict() for r in o.records]), "global_step": self.steps.step,
                "strategy": self.strategy.state_dict(), "plugins": state_of(self.plugins), "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        o, done = self.outcome, state["next_experience"]
        o.R[:done] = state["R"].numpy()
        o.b[:] = state["b"].numpy()
        o.records = [ExperienceRecord.from_dict(r) for r in state["records"]]
        o.resumed_from = done
        self.steps.step = state["global_step"]
        self.strategy.load_state_dict(state["strategy"])
        load_state_of(self.plugins, state["plugins"])

    # -- the loop ----------------------------------------------------------------------------------
    def _flops(self, task: int) -> int | None:
        """FLOPs per sample of the net as it stands (a zero input: no random numbers are drawn)."""
        try:
            return flops_per_sample(self.net, self.stream.input_shape, task)
        except Exception:  # a net FlopCounterMode cannot trace: the record says unknown
            return None

    def run(self, resume: dict | None = None) -> RunOutcome:
        """Run every experience, or, given a checkpoint's state, the ones after it."""
        out = self.outcome
        with self.stop:
            try:
                if resume is not None:
                    self.load_state_dict(resume)
                else:
                    out.b[:] = self.evaluate()
                for p in self.plugins:
                    p.before_run(self)
                if resume is not None:  # last: nothing between here and the next experience draws
                    set_rng_state(resume["rng"])
                for i in range(len(out.records), self.stream.n_experiences):
                    self._experience(i)
                out.status = "completed"
            except RunInterrupted as e:
                out.status, out.reason, out.signal = "interrupted", str(e), e.signal
                raise
            except BaseException as e:
                out.status, out.reason = "failed", str(e) or type(e).__name__
                raise
            finally:
                with self.stop.critical():
                    for p in self.plugins:
                        p.after_run(self)
        return out

    def _experience(self, i: int) -> None:
        self.index, self.record = i, None
        self.experience = train = self.strategy.train_data(self.stream, i)
        for p in self.plugins:
            p.before_experience(self)
        self.strategy.to(self.device)
        self.strategy.before_experience(train)

        curve = LearningCurve(self.stream.test[i], self.lca_beta, self.curve_every_n_steps, self.eval_batch_size)
        data = ExperienceDataModule(train, self.strategy.train_batch_size(self.batch_size),
                                    seed=self.seed + self.data_seed_offset * i)
        callbacks: list[pl.Callback] = [self.steps]
        if self.lca_beta > 0 or self.curve_every_n_steps > 0:  # both 0: the probe is off
            callbacks.append(curve)
        stability = None
        if self.stability_every_n_steps and i > 0:
            stability = StabilityProbe(self.stream.test[:i], self.stability_every_n_steps, self.eval_batch_size)
            callbacks.append(stability)
        for p in self.plugins:
            callbacks.extend(p.training_callbacks(self))
        trainer = make_trainer(self.strategy.epochs(self.epochs), callbacks, **self.trainer_kwargs)
        t0 = time.perf_counter()
        trainer.fit(self.strategy, datamodule=data)
        fit_seconds = time.perf_counter() - t0

        # End-of-experience consolidation (EWC's Fisher, PackNet's prune-and-freeze) belongs to the
        # experience, so the row of R is measured after it.
        self.strategy.to(self.device)
        for p in self.plugins:
            p.after_training(self)
        self.strategy.after_training(train)
        t0 = time.perf_counter()
        row = self.evaluate()
        eval_seconds = time.perf_counter() - t0

        steps = int(trainer.global_step)
        probe_seconds = curve.probe_seconds + (stability.probe_seconds if stability else 0.0)
        train_seconds = fit_seconds - probe_seconds
        # The curve's last point is the end of training, at the accuracy that R records.
        curve_steps, curve_accs, curve_secs = curve.steps + [steps], curve.accs + [row[i]], curve.seconds + [train_seconds]
        hit = steps_to_fraction(curve_steps, curve_accs, row[i], 0.95)
        report = self.strategy.report()
        self.record = ExperienceRecord(
            index=i, train_samples=len(train.y), steps=steps, global_step=self.steps.step,
            train_seconds=train_seconds, probe_seconds=probe_seconds, eval_seconds=eval_seconds, accuracy=row,
            lca=learning_curve_area(curve.z, self.lca_beta) if curve.z else None, lca_z=curve.z,
            steps_to_95=hit, seconds_to_95=None if hit is None else curve_secs[curve_steps.index(hit)],
            curve={"steps": curve_steps, "accuracy": curve_accs, "seconds": curve_secs},
            stability=stability.summary() if stability else None,
            parameters=sum(p.numel() for p in self.net.parameters()), widths=list(getattr(self.net, "widths", [])),
            flops=self._flops(train.task_label), strategy=report.to_dict(), strategy_morphs=list(report.morphs),
        )
        # The row, the plugins' records and the checkpoint go together: a signal waits for all three.
        with self.stop.critical():
            self.outcome.R[i] = row
            self.outcome.records.append(self.record)
            for p in self.plugins:
                p.after_experience(self)
            if self.checkpoint is not None:
                self.checkpoint(self.state_dict())
