"""Lightning ``Trainer``s for one experience: quiet, no checkpoints or loggers of their own."""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl


def quiet_lightning() -> None:
    """Silence Lightning's per-Trainer banners and hints that do not apply to tensor data."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                ".*GPU available but not used.*", ".*LeafSpec.*", ".*`isinstance.*treespec.*"):
        warnings.filterwarnings("ignore", message=msg)


def cache_callback_plugin_scan() -> None:
    """Every ``pl.Trainer()`` scans all installed packages' entry points for callback plugins
    (~15 ms here, 4% of an experience). We build one Trainer per experience, so scan once; only
    an empty result is cached, since plugin factories may expect fresh callback instances.
    """
    from pytorch_lightning.trainer.connectors import callback_connector as cc

    if getattr(cc._load_external_callbacks, "_neumeta_cached", False):
        return
    original, empty = cc._load_external_callbacks, set()

    def load(group: str):
        if group in empty:
            return []
        found = original(group)
        if not found:
            empty.add(group)
        return found

    load._neumeta_cached = True
    cc._load_external_callbacks = load


def make_trainer(epochs: int, callbacks: list | None = None, **kwargs) -> pl.Trainer:
    """A Trainer for one experience; ``kwargs`` override the quiet defaults."""
    quiet_lightning()
    cache_callback_plugin_scan()
    settings = dict(enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                    logger=False, enable_progress_bar=False, devices=1)
    settings.update(kwargs)
    return pl.Trainer(max_epochs=epochs, callbacks=list(callbacks or []), **settings)
