"""A multi-layer perceptron whose widths and depth are explicit, editable state."""

from __future__ import annotations

import math

import torch
from torch import nn

from neumeta_cl.nets.heads import make_head
from neumeta_cl.nets.activations import make_activation


class MLP(nn.Module):
    """flatten -> [Linear -> activation] x depth -> head.

    Each hidden layer is its own ``nn.Sequential(Linear, activation)`` in ``self.blocks`` so a
    morph can replace, insert or delete one block without touching the others. ``widths`` is read
    off the modules, so it can never disagree with them.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        widths: list[int],
        n_classes: int,
        heads: list[int] | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        self.input_shape = tuple(input_shape)
        d = math.prod(input_shape)
        blocks = []
        for w in widths:
            blocks.append(nn.Sequential(nn.Linear(d, w), make_activation(activation)))
            d = w
        self.blocks = nn.ModuleList(blocks)
        self.head = make_head(d, n_classes, heads)

    @property
    def widths(self) -> list[int]:
        return [block[0].out_features for block in self.blocks]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), t)
