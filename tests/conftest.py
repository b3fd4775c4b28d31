import os
from pathlib import Path

import pytest
import torch

# Small test models run fastest on one thread, and two threads stall badly when another
# process holds the second core (OpenMP spin-waits).
torch.set_num_threads(1)

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

FMNIST_DIR = Path(os.environ.get("NEUMETA_CL_DEBIAN_FMNIST", "/usr/share/datasets/fashion-mnist"))


def fmnist_available() -> bool:
    return any(FMNIST_DIR.glob("train-images-idx3-ubyte*"))


# In CI the data must be there (.ci/run installs it); elsewhere, say what to install.
needs_fmnist = pytest.mark.skipif(
    not fmnist_available() and not os.environ.get("CI"),
    reason="Fashion-MNIST not installed: sudo apt-get install dataset-fashion-mnist",
)


@pytest.fixture
def fast_overrides(tmp_path):
    """A run on scikit-learn digits that takes seconds: 5 experiences, small MLP, no W&B."""
    return [
        "benchmark=split_digits", "benchmark.n_experiences=5", "model.widths=[64]", "train.epochs=4",
        "train.batch_size=32", "train.lr=0.05", "logger.mode=disabled", f"output_dir={tmp_path / 'runs'}",
        "run_name=test", "train.progress_bar=false",
    ]


class Boundary:
    """What the loop hands plugins at an experience boundary (``neumeta_cl.protocol``), for tests
    that drive a strategy's events without a whole run."""

    def __init__(self, strategy, experience, device="cpu"):
        self.strategy, self.experience, self.device = strategy, experience, torch.device(device)
        self.index = experience.index

    @property
    def net(self):
        return self.strategy.net


def end_experience(strategy, experience) -> None:
    """The loop's consolidation after training: every plugin's ``after_training``, then the strategy's."""
    run = Boundary(strategy, experience)
    for part in strategy.parts:
        part.after_training(run)
    strategy.after_training(experience)
