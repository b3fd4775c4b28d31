"""Weights & Biases logging through Lightning's ``WandbLogger`` (offline unless the user asks).

All metrics are logged against ``trainer/global_step`` from the runner's ``StepCounter``, the
only step counter of a run: Lightning's own counter restarts with every experience's Trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neumeta_cl.errors import ConfigError

MODES = ("offline", "online", "disabled")


def make_wandb_logger(mode: str, project: str, run_name: str, save_dir: Path, config: dict, entity: str | None = None,
                      tags: list[str] | None = None, run_id: str | None = None, group: str | None = None):
    """A ``WandbLogger`` whose run is started now, so its files exist even if the run fails early.

    ``run_id`` makes a rerun of the same run folder continue the same W&B run (``resume="allow"``).
    ``disabled`` returns None: nothing is started and every logging call is a no-op.
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown logger.mode '{mode}'; valid modes are: {', '.join(MODES)}.")
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    extra = {"id": run_id, "resume": "allow"} if run_id else {}
    logger = WandbLogger(name=run_name, project=project, entity=entity, save_dir=str(save_dir), mode=mode,
                         config=config, tags=list(tags or []), group=group, reinit="finish_previous", **extra)
    # Lightning always passes `anonymous`, which this wandb version warns about on every run.
    logger._wandb_init.pop("anonymous", None)
    logger.experiment  # start the run (and its directory) now
    return logger


def run_dir(logger) -> str | None:
    """Local directory of the W&B run (``.../wandb/offline-run-*``), or None when disabled."""
    if logger is None:
        return None
    return str(Path(logger.experiment.dir).parent)


def logged_before(wandb_root: Path, run_id: str, current: str | None) -> dict[int, set[str]]:
    """Keys an earlier attempt of this W&B run logged at each step, read from its local run files.

    A killed run may have logged part of the experience it did not finish; the resumed run
    repeats that experience and must not log those (step, key) pairs twice.
    """
    from neumeta_cl.tracking.wandb_file import read_run

    seen: dict[int, set[str]] = {}
    for d in sorted(Path(wandb_root).glob(f"*-{run_id}")):
        if current is not None and d.resolve() == Path(current).resolve():
            continue
        try:
            history = read_run(d).history
        except (FileNotFoundError, ValueError):
            continue
        for row in history:
            step = row.get(STEP_KEY)
            if step is not None:
                seen.setdefault(int(step), set()).update(k for k in row if not k.startswith("_") and k != STEP_KEY)
    return seen


STEP_KEY = "trainer/global_step"


class WandbLog:
    """Everything a run logs to W&B, against the runner's global step, each (step, key) once."""

    def __init__(self, logger, skip: dict[int, set[str]] | None = None):
        self.logger, self.skip = logger, skip or {}

    def _fresh(self, data: dict, step: int) -> dict:
        done = self.skip.get(step)
        return {k: v for k, v in data.items() if k not in done} if done else data

    def metrics(self, metrics: dict, step: int) -> None:
        metrics = self._fresh(metrics, step)
        if metrics:
            self.logger.log_metrics(metrics, step=step)

    def accuracy_matrix(self, R: np.ndarray, step: int) -> None:
        """The accuracy matrix as a ``wandb.Table`` (one row per trained experience) and a heatmap image."""
        if not self._fresh({"accuracy_matrix": 1}, step):
            return
        import matplotlib.pyplot as plt
        import wandb

        columns = ["trained_up_to"] + [f"exp_{j}" for j in range(R.shape[1])]
        rows = [[i] + [float(v) for v in R[i]] for i in range(R.shape[0])]
        fig = accuracy_heatmap(R)
        self.logger.experiment.log({"accuracy_matrix": wandb.Table(columns=columns, data=rows),
                                    "accuracy_matrix_heatmap": wandb.Image(fig), STEP_KEY: step})
        plt.close(fig)

    def width_table(self, rows: list[dict], step: int) -> None:
        """Accuracy of every seen task at every generated width, and generation time, as a ``wandb.Table``."""
        if not self._fresh({"accuracy_by_width": 1}, step):
            return
        import wandb

        n = len(rows[0]["accuracy"])
        columns = ["fraction", "widths", "unseen", "params", "gen_ms", "acc_seen"] + [f"task_{j}" for j in range(n)]
        data = [[r["fraction"], str(r["widths"]), r["unseen"], r["params"], r["gen_ms"], r["acc_seen"], *r["accuracy"]]
                for r in rows]
        self.logger.experiment.log({"accuracy_by_width": wandb.Table(columns=columns, data=data), STEP_KEY: step})

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        run = self.logger.experiment
        for key, value in summary.items():
            run.summary[key] = value
        run.finish(exit_code=exit_code)


def accuracy_heatmap(R: np.ndarray):
    """A matplotlib figure of the accuracy matrix (rows: trained up to i; columns: tested on j)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = R.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * T, 0.8 + 0.7 * T))
    shown = np.where(np.isnan(R), np.nan, R)
    im = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            if not np.isnan(R[i, j]):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", color="w" if R[i, j] < 0.6 else "k", fontsize=8)
    ax.set_xlabel("tested on experience j")
    ax.set_ylabel("trained up to experience i")
    ax.set_xticks(range(T))
    ax.set_yticks(range(R.shape[0]))
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
