"""Per-experience input transforms of domain-incremental streams: fixed permutations and rotations.

Each transform is a deterministic callable that works on one sample ([C, H, W] or [1, L]) and on a
batch ([N, C, H, W] or [N, 1, L]) alike; we apply it once to a whole experience, while Avalanche's
datasets apply the reference op per sample (PixelsPermutation, torchvision's rotate); tests show
both agree exactly. Parameters are drawn as Avalanche's PermutedMNIST / RotatedMNIST draw them:
from `np.random.RandomState(seed)`, one per experience, the first experience transformed too.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF


def draw_permutations(seed: int, n_features: int, n_experiences: int) -> list[torch.Tensor]:
    """One permutation of the flattened features per experience (the first experience is permuted too)."""
    rng = np.random.RandomState(seed)
    return [torch.from_numpy(rng.permutation(n_features)).long() for _ in range(n_experiences)]


def draw_angles(seed: int, n_experiences: int) -> list[float]:
    """One integer angle in [-180, 180] degrees per experience."""
    rng = np.random.RandomState(seed)
    return [float(rng.randint(-180, 181)) for _ in range(n_experiences)]


class Permute:
    """x -> x with its flattened features reordered by `perm` (new feature i = old feature perm[i])."""

    def __init__(self, perm: torch.Tensor, sample_shape: tuple):
        self.perm = perm
        self.sample_shape = tuple(sample_shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.ndim - len(self.sample_shape)]  # () for one sample, (N,) for a batch
        return x.reshape(*lead, -1).index_select(-1, self.perm).reshape(x.shape)

    def __repr__(self) -> str:
        return f"Permute(n_features={len(self.perm)})"


class Rotate:
    """Rotate inputs by a fixed angle; `reference` is the per-sample op Avalanche's datasets apply.

    Images: counter-clockwise about the centre, nearest neighbour, uncovered corners set to `fill`
    (the normalised blank value): torchvision's `rotate`, as RandomRotation((a, a)) in Avalanche's
    RotatedMNIST. A nearest-neighbour rotation only moves pixels, so we rotate an image of pixel
    indices once and apply the rotation to a batch as one gather (exact, ~5x faster than
    grid_sample on the batch).

    1-D signals of length L ([1, L] samples, MNIST-1D): a rotation is a circular shift,
    `torch.roll` by round(angle / 360 * L) positions along the signal (positive angle = shift
    right), so a full turn is a full cycle and no value is lost.
    """

    def __init__(self, angle: float, sample_shape: tuple, fill: float = 0.0):
        self.angle = float(angle)
        self.sample_shape = tuple(sample_shape)
        self.fill = float(fill)
        self.signal = len(self.sample_shape) == 2  # (1, L)
        if self.signal:
            self.shift = int(round(self.angle / 360.0 * self.sample_shape[-1]))
            self.reference = partial(torch.roll, shifts=self.shift, dims=-1)
            return
        h, w = self.sample_shape[-2:]
        self.reference = partial(TF.rotate, angle=self.angle, interpolation=InterpolationMode.NEAREST, fill=[self.fill])
        # float32 like the data: torchvision builds its sampling grid in the image's dtype
        index = torch.arange(h * w, dtype=torch.float32).view(1, h, w)
        self.source = self.reference(index, fill=[-1.0]).view(-1).long()  # -1: outside the input
        self.outside = (self.source < 0).nonzero().view(-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.signal:
            return self.reference(x)
        planes = x.reshape(-1, x.shape[-2] * x.shape[-1])  # 2-D: index_select's fast path
        out = planes.index_select(1, self.source.clamp(min=0))
        out.index_fill_(1, self.outside, self.fill)
        return out.reshape(x.shape)

    def __repr__(self) -> str:
        how = f"shift={self.shift}" if self.signal else f"fill={self.fill:.4g}"
        return f"Rotate(angle={self.angle:g}, {how})"
