"""A small CNN (2-D images or 1-D signals) whose channel widths and depth are explicit state."""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.nets.activations import make_activation
from neumeta_cl.nets.heads import make_head

_LAYERS = {  # spatial dims -> (conv, batchnorm, maxpool, adaptive avg pool)
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
}


class CNN(nn.Module):
    """[Conv -> BatchNorm -> activation -> MaxPool(2)] x depth -> global average pool -> head.

    Blocks live in ``self.blocks`` (one ``nn.Sequential`` each) so morphs can edit one at a time.
    Pooling stops halving once the feature map is 1 wide, so the same widths fit 8x8 digits,
    28x28 Fashion-MNIST and length-40 MNIST-1D.
    """

    pool_size = 1  # cells per side of the pooled grid the head reads (``GridCNN``: more than one)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: list[int],
        n_classes: int,
        heads: list[int] | None = None,
        kernel_size: int = 3,
        batchnorm: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.input_shape = tuple(input_shape)
        spatial = len(input_shape) - 1
        if spatial not in _LAYERS:
            raise ValueError(f"CNN takes inputs shaped (C, L) or (C, H, W), got {input_shape}")
        conv, bn, pool, gap = _LAYERS[spatial]
        c_in, size = input_shape[0], min(input_shape[1:])
        blocks = []
        for c in channels:
            layers = [conv(c_in, c, kernel_size, padding=kernel_size // 2)]
            if batchnorm:
                layers.append(bn(c))
            layers.append(make_activation(activation))
            if size >= 2:
                layers.append(pool(2))
                size //= 2
            blocks.append(nn.Sequential(*layers))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.Sequential(gap(self.pool_size), nn.Flatten(1))
        self.head = make_head(c_in * self.pool_size ** spatial, n_classes, heads)

    @property
    def widths(self) -> list[int]:
        return [block[0].out_channels for block in self.blocks]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x), t)


class GridCNN(CNN):
    """A CNN whose head reads each channel's last feature map averaged down to ``pool_size`` cells per
    side, flattened channel by channel (a channel's cells side by side): ``widths[-1] * pool_size **
    spatial dims`` numbers in place of one per channel. Not a registered model: class-incremental
    NeuMeta's task classifier (``hypernet.generator.task_classifier``), where one average per channel
    is too little at narrow widths."""

    def __init__(self, input_shape: tuple[int, ...], channels: list[int], n_classes: int, pool_size: int, **kwargs):
        if not (isinstance(pool_size, int) and pool_size >= 1):
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        self.pool_size = pool_size  # a plain int, so it may be set before nn.Module's init; CNN's init reads it
        super().__init__(input_shape, channels, n_classes, **kwargs)
