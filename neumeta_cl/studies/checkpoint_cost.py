"""What resumable runs cost: checkpoint time as a fraction of training time, and checkpoint size.

A ``CheckpointTimer`` plugin writes the very state the runner checkpoints (``runner.state_dict()``
through ``save_checkpoint``) after every experience, timed, next to the run's own checkpoint; the
fraction is that time over the experience's training seconds. Sizes are the runs' real
``checkpoint.pt`` files.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from neumeta_cl.protocol import Plugin
from neumeta_cl.runner.checkpoint import save_checkpoint

# The two measured settings: the quickstart's MLP with naive, NeuMeta's CNN as in neumeta_widths.
NAIVE_MLP = ["benchmark=split_fmnist", "benchmark.scenario=class", "model=mlp", "strategy=naive"]
NEUMETA_CNN = ["benchmark=split_fmnist", "benchmark.scenario=task", "model=cnn", "model.channels=[32,64]",
               "strategy=neumeta", "train.optimizer=adam", "train.lr=0.001", "train.epochs=3",
               "metrics.lca_beta=0", "metrics.curve_every_n_steps=0"]
QUICK = ["benchmark=split_digits", "train.epochs=2"]
QUICK_NEUMETA = ["strategy.recon_steps=20", "strategy.teacher_epochs=1", "strategy.hidden=32", "strategy.task_dim=8",
                 "strategy.eval_fractions=[1.0]", "strategy.widths_unseen=[]", "model.channels=[8,16]"]


class CheckpointTimer(Plugin):
    """Seconds to write the runner's checkpoint state, per experience."""

    def __init__(self):
        self.seconds: list[float] = []
        self.train_seconds: list[float] = []
        self._dir = tempfile.TemporaryDirectory(prefix="ckpt-timer-")

    def after_experience(self, run) -> None:
        t0 = time.perf_counter()
        save_checkpoint(run.state_dict(), Path(self._dir.name) / "checkpoint.pt")
        self.seconds.append(time.perf_counter() - t0)
        self.train_seconds.append(run.record.train_seconds)

    @property
    def fraction(self) -> float:
        return float(np.sum(self.seconds) / np.sum(self.train_seconds))


def measure(overrides: list[str], out: Path) -> dict:
    """One run with the timer: its checkpoint cost and size."""
    from neumeta_cl.config import load
    from neumeta_cl.run import run_continual

    timer = CheckpointTimer()
    ov = [*overrides, f"output_dir={out}", "logger.mode=disabled", "train.progress_bar=false", "resume=false"]
    result = run_continual(load(ov), plugins=[timer], overrides=ov)
    size = (result.results_path.parent / "checkpoint.pt").stat().st_size
    return {"fraction": timer.fraction, "checkpoint_ms": [1e3 * s for s in timer.seconds],
            "train_seconds": timer.train_seconds, "checkpoint_mb": size / 2**20}


def checkpoint_cost(out: Path, quick: bool = False, strategies: list[str] | None = None) -> dict:
    """The overhead of the two settings, and every strategy's checkpoint size on the quickstart stream
    (NeuMeta's in its CNN setting)."""
    from neumeta_cl.strategies import STRATEGIES

    extra = QUICK if quick else []
    naive = measure([*NAIVE_MLP, *extra], out / "naive_mlp")
    neumeta = measure([*NEUMETA_CNN, *extra, *(QUICK_NEUMETA if quick else [])], out / "neumeta_cnn")
    sizes = {}
    for name in strategies or STRATEGIES.names():
        if name == "neumeta":  # measured above, in its own setting (a generator of CNNs)
            sizes[name] = round(neumeta["checkpoint_mb"], 3)
            continue
        ov = [*NAIVE_MLP[:-1], f"strategy={name}", "train.epochs=1", *extra]
        if name == "prune_grow":  # packs units per task
            ov.append("benchmark.scenario=task")
        sizes[name] = round(measure(ov, out / "sizes" / name)["checkpoint_mb"], 3)
    return {"naive_mlp": naive, "neumeta_cnn": neumeta, "checkpoint_mb": sizes,
            "checkpoint_overhead_frac": max(naive["fraction"], neumeta["fraction"])}


def table(res: dict) -> str:
    lines = ["| run | checkpoint ms per experience (median) | train s per experience (median) | fraction | size MB |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in (("naive_mlp", "naive, MLP 2x256, Split-FMNIST"), ("neumeta_cnn", "neumeta, CNN [32, 64], Split-FMNIST")):
        r = res[key]
        lines.append(f"| {label} | {np.median(r['checkpoint_ms']):.1f} | {np.median(r['train_seconds']):.2f} | "
                     f"{100 * r['fraction']:.2f}% | {r['checkpoint_mb']:.2f} |")
    lines += ["", "| strategy | checkpoint MB |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in res["checkpoint_mb"].items()]
    return "\n".join(lines)
