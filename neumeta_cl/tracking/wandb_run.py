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
                      tags: list[str] | None = None):
    """A ``WandbLogger`` whose run is started now, so its files exist even if the run fails early.

    ``disabled`` returns None: nothing is started and every logging call is a no-op.
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown logger.mode '{mode}'; valid modes are: {', '.join(MODES)}.")
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    from pytorch_lightning.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(name=run_name, project=project, entity=entity, save_dir=str(save_dir), mode=mode,
                         config=config, tags=list(tags or []), reinit="finish_previous")
    # Lightning always passes `anonymous`, which this wandb version warns about on every run.
    logger._wandb_init.pop("anonymous", None)
    logger.experiment  # start the run (and its directory) now
    return logger


def run_dir(logger) -> str | None:
    """Local directory of the W&B run (``.../wandb/offline-run-*``), or None when disabled."""
    if logger is None:
        return None
    return str(Path(logger.experiment.dir).parent)


def log_metrics(logger, metrics: dict, step: int) -> None:
    if logger is not None:
        logger.log_metrics(metrics, step=step)


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


def log_accuracy_matrix(logger, R: np.ndarray, step: int) -> None:
    """The accuracy matrix as a ``wandb.Table`` (one row per trained experience) and a heatmap image."""
    if logger is None:
        return
    import matplotlib.pyplot as plt
    import wandb

    columns = ["trained_up_to"] + [f"exp_{j}" for j in range(R.shape[1])]
    rows = [[i] + [float(v) for v in R[i]] for i in range(R.shape[0])]
    fig = accuracy_heatmap(R)
    logger.experiment.log({"accuracy_matrix": wandb.Table(columns=columns, data=rows),
                           "accuracy_matrix_heatmap": wandb.Image(fig), "trainer/global_step": step})
    plt.close(fig)


def log_width_table(logger, rows: list[dict], step: int) -> None:
    """Accuracy of every seen task at every generated width, and generation time, as a ``wandb.Table``."""
    if logger is None:
        return
    import wandb

    n = len(rows[0]["accuracy"])
    columns = ["fraction", "widths", "unseen", "params", "gen_ms", "acc_seen"] + [f"task_{j}" for j in range(n)]
    data = [[r["fraction"], str(r["widths"]), r["unseen"], r["params"], r["gen_ms"], r["acc_seen"], *r["accuracy"]]
            for r in rows]
    logger.experiment.log({"accuracy_by_width": wandb.Table(columns=columns, data=data), "trainer/global_step": step})


def finish(logger, summary: dict, exit_code: int = 0) -> None:
    if logger is None:
        return
    run = logger.experiment
    for key, value in summary.items():
        run.summary[key] = value
    run.finish(exit_code=exit_code)
