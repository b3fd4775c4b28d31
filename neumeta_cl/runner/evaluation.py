"""Test accuracy of a network on tensor experiences (no Lightning: it is a plain forward pass)."""

from __future__ import annotations

from torch import nn

from neumeta_cl.data import TensorExperience
from neumeta_cl.nets.evaluation import tensor_accuracy


def accuracy(net: nn.Module, exp: TensorExperience, batch_size: int = 1024, device=None) -> float:
    """Fraction of ``exp`` classified correctly; multi-head nets use each sample's task head."""
    return tensor_accuracy(net, exp.x, exp.y, exp.t, batch_size, device)


def accuracy_row(net: nn.Module, exps: list[TensorExperience], batch_size: int = 1024, device=None) -> list[float]:
    """Accuracy on every experience: one row of the accuracy matrix R."""
    return [accuracy(net, e, batch_size, device) for e in exps]
