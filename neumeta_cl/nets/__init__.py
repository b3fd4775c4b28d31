"""Morphable networks: widths and depth are explicit state that morph operators edit."""

from __future__ import annotations

from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.nets.cnn import CNN
from neumeta_cl.nets.heads import MultiHead, SingleHead
from neumeta_cl.nets.mlp import MLP
from neumeta_cl.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("cnn")(CNN)


def build_model(cfg: dict, input_shape: tuple[int, ...], n_classes: int, heads: list[int] | None) -> nn.Module:
    """Build a registered model from its config node (``name`` plus the model's own keys)."""
    cfg = dict(cfg)
    cls = MODELS.get(cfg.pop("name"))
    try:
        return cls(input_shape=tuple(input_shape), n_classes=n_classes, heads=heads, **cfg)
    except TypeError as e:  # an unexpected key in the model config
        raise ConfigError(f"Invalid model config {cfg}: {e}.") from None


__all__ = ["MLP", "CNN", "SingleHead", "MultiHead", "MODELS", "build_model"]
