"""Accuracy of a network on tensors: the one forward-pass loop every part of the project uses."""

from __future__ import annotations

import torch
from torch import nn


@torch.inference_mode()
def tensor_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None,
                    batch_size: int = 1024, device=None) -> float:
    """Fraction of ``x`` classified as ``y`` in eval mode; multi-head nets use each sample's task ``t``."""
    device = device or next(net.parameters()).device
    if t is None:
        t = torch.zeros(len(y), dtype=torch.long)
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        sl = slice(start, start + batch_size)
        logits = net(x[sl].to(device, non_blocking=True), t[sl].to(device))
        correct += (logits.argmax(1) == y[sl].to(device)).sum().item()
    net.train(was_training)
    return correct / max(len(y), 1)
