"""Train one network on one experience with a Lightning ``Trainer`` (no stream, no metrics).

Used for the networks a strategy or a script needs beside the continual run: NeuMeta's per-task
teachers and the individually trained baselines they are compared with.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from neumeta_cl.data import ExperienceDataModule, TensorExperience


def fit_experience(net: nn.Module, experience: TensorExperience, *, epochs: int, optim, batch_size: int = 128,
                   seed: int = 0, accelerator: str = "auto") -> nn.Module:
    """Fine-tune ``net`` (in place) on ``experience`` with cross-entropy; returns it in eval mode."""
    from neumeta_cl.runner.loop import _cache_callback_plugin_scan, quiet_lightning
    from neumeta_cl.strategies.naive import Naive

    quiet_lightning()
    _cache_callback_plugin_scan()
    module = Naive(net, optim, batch_size=batch_size, seed=seed)
    module.show_progress = False
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=ExperienceDataModule(experience, batch_size, seed=seed))
    return net.eval()
