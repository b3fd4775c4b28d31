"""Sanity ranges on real Split-Fashion-MNIST (5 experiences, MLP 2x256): `make test-slow`.

These are checks that the whole stack learns what the literature says it should, not targets.
"""

import pytest

from neumeta_cl.config import load
from neumeta_cl.experiment import run_experiment
from neumeta_cl.run import run_continual

from tests.conftest import needs_fmnist

pytestmark = [pytest.mark.slow, needs_fmnist]


def test_quickstart_class_incremental_ranges(tmp_path):
    res = run_experiment("quickstart", ["logger.mode=disabled", "train.progress_bar=false"], out_root=str(tmp_path))
    acc = {label: runs[0].outcome.R[-1].mean() for label, runs in res.runs.items()}
    assert acc["naive"] < 0.25
    assert acc["joint"] > 0.84
    assert acc["replay"] > 0.65
    assert acc["naive"] < acc["replay"] < acc["joint"]


def test_task_incremental_naive_is_high(tmp_path):
    cfg = load(["benchmark=split_fmnist", "benchmark.scenario=task", "model=mlp", "strategy=naive",
                "logger.mode=disabled", "train.progress_bar=false", f"output_dir={tmp_path}", "run_name=til"])
    assert run_continual(cfg).outcome.R[-1].mean() > 0.85
