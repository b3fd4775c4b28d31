"""Test accuracy of a network on tensor experiences (no Lightning: it is a plain forward pass)."""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.data import TensorExperience


@torch.inference_mode()
def accuracy(net: nn.Module, exp: TensorExperience, batch_size: int = 1024, device=None) -> float:
    """Fraction of ``exp`` classified correctly; multi-head nets use each sample's task head."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(exp.y), batch_size):
        sl = slice(start, start + batch_size)
        logits = net(exp.x[sl].to(device, non_blocking=True), exp.t[sl].to(device))
        correct += (logits.argmax(1).cpu() == exp.y[sl]).sum().item()
    net.train(was_training)
    return correct / len(exp.y)


def accuracy_row(net: nn.Module, exps: list[TensorExperience], batch_size: int = 1024, device=None) -> list[float]:
    """Accuracy on every experience: one row of the accuracy matrix R."""
    return [accuracy(net, e, batch_size, device) for e in exps]
