"""Helpers for tests that launch real sweeps and kill real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# A digits run of a few seconds whose experiences each take long enough to be killed in the middle.
SLOW_DIGITS = ["benchmark=split_digits", "benchmark.n_experiences=5", "model.widths=[64]", "train.epochs=30",
               "train.batch_size=32", "train.lr=0.05", "logger.mode=disabled", "metrics.curve_every_n_steps=0",
               "metrics.lca_beta=0"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """``neumeta-cl ARGS`` in a real child process (its own session, so signals reach only it)."""
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "neumeta_cl.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True)


def wait_until(predicate, timeout: float = 240.0, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def experiences_done(results: Path) -> int:
    try:
        return len(json.loads(results.read_text())["experiences"])
    except (OSError, ValueError, KeyError):
        return 0


def run_pid(run_folder: Path) -> int:
    """The pid that holds a run folder's lock ("process N on HOST")."""
    text = (run_folder / ".lock").read_text()
    return int(text.split()[1])


def kill_mid_run(sweep_dir: Path, sig: int = signal.SIGKILL, after: int = 1, timeout: float = 240.0) -> tuple[Path, int]:
    """Wait for a run of the sweep to finish ``after`` experiences (not all), then send ``sig`` to its process."""
    def midway():
        for results in sweep_dir.rglob("results.json"):
            if after <= experiences_done(results) < 5 and (results.parent / "checkpoint.pt").exists():
                return results.parent
        return None

    folder = wait_until(midway, timeout)
    pid = run_pid(folder)
    os.kill(pid, sig)
    return folder, pid


def final_R(results: Path) -> np.ndarray:
    return np.asarray(json.loads(Path(results).read_text())["R"])


def uninterrupted_R(overrides: list[str], out: Path) -> np.ndarray:
    """R of the same run, trained in one go in this process."""
    from neumeta_cl.config import load
    from neumeta_cl.run import run_continual

    result = run_continual(load([*overrides, f"output_dir={out}", "train.progress_bar=false"]))
    return result.outcome.R
