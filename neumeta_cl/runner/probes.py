"""Lightning callbacks that watch training: the global step counter and the learning curve."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from neumeta_cl.data import TensorExperience
from neumeta_cl.runner.evaluation import accuracy


class StepCounter(pl.Callback):
    """Owns the run's global optimizer-step counter, which survives the per-experience Trainers.

    Lightning's ``trainer.global_step`` restarts with every ``Trainer``; W&B needs one monotonic
    step for the whole run, so every W&B call goes through ``log`` with this counter.
    """

    def __init__(self, log_fn=None, every_n_steps: int = 1):
        self.step = 0
        self.log_fn = log_fn
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step += 1
        if self.log_fn is not None and self.every_n_steps and self.step % self.every_n_steps == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.log_fn({"train/loss": float(loss), "train/experience": pl_module.experience_index}, self.step)


class LearningCurve(pl.Callback):
    """Accuracy of the current experience during its training.

    Records Z_k after k = 0..beta mini-batches (for LCA_beta) and then every ``every_n_steps``
    steps (for steps/seconds to 95% of the final accuracy). Training seconds exclude the time
    spent in these evaluations.
    """

    def __init__(self, test: TensorExperience, beta: int = 10, every_n_steps: int = 10, eval_batch_size: int = 1024):
        self.test, self.beta, self.every_n_steps, self.eval_batch_size = test, beta, every_n_steps, eval_batch_size
        self.z: list[float] = []  # Z_0..Z_beta
        self.steps: list[int] = []  # learning curve: (step, accuracy, training seconds)
        self.accs: list[float] = []
        self.seconds: list[float] = []
        self.probe_seconds = 0.0
        self._t0 = 0.0

    def _record(self, pl_module, step: int) -> None:
        t = time.perf_counter()
        train_seconds = t - self._t0 - self.probe_seconds
        acc = accuracy(pl_module.net, self.test, self.eval_batch_size, pl_module.device)
        if step <= self.beta:
            self.z.append(acc)
        if self.every_n_steps and step % self.every_n_steps == 0:
            self.steps.append(step)
            self.accs.append(acc)
            self.seconds.append(train_seconds)
        self.probe_seconds += time.perf_counter() - t

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._record(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step <= self.beta or (self.every_n_steps and step % self.every_n_steps == 0):
            self._record(pl_module, step)


class StabilityProbe(pl.Callback):
    """Accuracy on the earlier experiences every ``every_n_steps`` while a new one trains.

    The stability gap (De Lange et al., ICLR 2023) is the drop from their accuracy before
    training to the lowest point of this curve; it is invisible in R, which only sees the end.
    """

    def __init__(self, earlier: list[TensorExperience], every_n_steps: int, eval_batch_size: int = 1024):
        self.earlier, self.every_n_steps, self.eval_batch_size = earlier, every_n_steps, eval_batch_size
        self.steps: list[int] = []
        self.accs: list[list[float]] = []  # one row per evaluation, one column per earlier experience
        self.probe_seconds = 0.0

    def _record(self, pl_module, step: int) -> None:
        t = time.perf_counter()
        self.steps.append(step)
        self.accs.append([accuracy(pl_module.net, e, self.eval_batch_size, pl_module.device) for e in self.earlier])
        self.probe_seconds += time.perf_counter() - t

    def on_train_start(self, trainer, pl_module):
        self._record(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._record(pl_module, trainer.global_step)

    def summary(self) -> dict:
        """Mean accuracy over the earlier experiences: before, lowest, and the gap between them."""
        means = [sum(row) / len(row) for row in self.accs]
        low = min(range(len(means)), key=means.__getitem__)
        return {"steps": self.steps, "acc_earlier": self.accs, "mean_before": means[0], "mean_min": means[low],
                "min_step": self.steps[low], "gap": means[0] - means[low]}
