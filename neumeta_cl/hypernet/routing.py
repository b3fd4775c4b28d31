"""Class-incremental use of per-task networks: infer the task from predictive entropy.

von Oswald et al. (2020), "HNET+ENT": every seen task's network classifies the input, the one
most certain of it (the lowest entropy of its softmax) decides, and its classes are the
prediction. No task label is needed at test time, and nothing but the generator is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row's softmax."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def route_by_entropy(logits: Sequence[torch.Tensor], classes: Sequence[Sequence[int]], n_classes: int) -> torch.Tensor:
    """Scores over all ``n_classes``: each row takes the log-probabilities of the task whose network
    is most certain (``logits[k]`` covers the global classes ``classes[k]``); every other class
    gets -inf, so the argmax is that task's prediction. Ties go to the earlier task."""
    entropy = torch.stack([predictive_entropy(lg) for lg in logits], 1)
    chosen = entropy.argmin(1)
    out = logits[0].new_full((len(chosen), n_classes), float("-inf"))
    for k, (lg, cls) in enumerate(zip(logits, classes)):
        rows = (chosen == k).nonzero()
        if len(rows):
            cols = torch.as_tensor(list(cls), device=lg.device)
            out[rows, cols] = lg[rows[:, 0]].log_softmax(1)
    return out


class EntropyRouter(nn.Module):
    """An ordinary module over every seen task's network: ``router(x)`` predicts global classes
    without a task label (``t`` is accepted and ignored, like a single-head network's)."""

    def __init__(self, nets: Sequence[nn.Module], classes: Sequence[Sequence[int]], n_classes: int):
        super().__init__()
        if len(nets) != len(classes) or not nets:
            raise ValueError("EntropyRouter needs one class list per network, and at least one network.")
        self.nets = nn.ModuleList(nets)
        self.classes = [list(map(int, c)) for c in classes]
        self.n_classes = int(n_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return route_by_entropy([net(x) for net in self.nets], self.classes, self.n_classes)
