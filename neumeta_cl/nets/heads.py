"""Output heads: one shared classifier (class/domain-incremental) or one per task (task-incremental)."""

from __future__ import annotations

import torch
from torch import nn


class SingleHead(nn.Module):
    """One linear classifier over all classes; task labels are ignored."""

    def __init__(self, in_features: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_features, n_classes)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(h)


class MultiHead(nn.Module):
    """One linear classifier per task; each sample is routed to the head of its task label."""

    def __init__(self, in_features: int, sizes: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_features, k) for k in sizes)

    @property
    def in_features(self) -> int:
        return self.heads[0].in_features

    @property
    def sizes(self) -> list[int]:
        return [h.out_features for h in self.heads]

    def forward_task(self, h: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](h)

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if t is None:
            raise ValueError("a multi-head network needs task labels; pass t (one label per sample)")
        tasks = t.unique()
        if len(tasks) == 1:  # the common case: a batch from one experience
            return self.heads[int(tasks[0])](h)
        # Mixed batch (e.g. replay): route per task; units a smaller head lacks get -inf,
        # so softmax gives them zero probability.
        out = h.new_full((h.shape[0], max(self.sizes)), float("-inf"))
        for task in tasks.tolist():
            rows = t == task
            logits = self.heads[task](h[rows])
            out[rows, : logits.shape[1]] = logits
        return out


def make_head(in_features: int, n_classes: int, heads: list[int] | None) -> nn.Module:
    return MultiHead(in_features, heads) if heads else SingleHead(in_features, n_classes)
