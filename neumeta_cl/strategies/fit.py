"""Train one network on one experience with a Lightning ``Trainer`` (no stream, no metrics).

Used for the networks a strategy or a script needs beside the continual run: NeuMeta's per-task
teachers and the individually trained baselines they are compared with.
"""

from __future__ import annotations

from torch import nn

from neumeta_cl.data import ExperienceDataModule, TensorExperience
from neumeta_cl.runner.trainer import make_trainer
from neumeta_cl.strategies.naive import Naive


def fit_experience(net: nn.Module, experience: TensorExperience, *, epochs: int, optim, batch_size: int = 128,
                   seed: int = 0, accelerator: str = "auto") -> nn.Module:
    """Fine-tune ``net`` (in place) on ``experience`` with cross-entropy; returns it in eval mode."""
    return fit_module(Naive(net, optim, batch_size=batch_size, seed=seed), experience, epochs=epochs,
                      batch_size=batch_size, seed=seed, accelerator=accelerator)


def fit_module(module, experience: TensorExperience, *, epochs: int, batch_size: int = 128, seed: int = 0,
               accelerator: str = "auto") -> nn.Module:
    """Train a strategy module's net (in place) on ``experience`` with the module's own loss (a
    memory it replays, ...); returns the net in eval mode."""
    trainer = make_trainer(epochs, accelerator=accelerator)
    trainer.fit(module, datamodule=ExperienceDataModule(experience, batch_size, seed=seed))
    return module.net.eval()
