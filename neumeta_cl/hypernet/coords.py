"""Coordinates of every weight of a generated network, and their Fourier encoding (pure functions).

NeuMeta (Yang & Wang 2024) treats a network as samples of one continuous function over weight
coordinates. A weight of layer ``l`` joining input unit ``j`` to output unit ``i`` sits at

    (l / (L-1),  (i + 1/2) / n_out,  (j + 1/2) / n_in,  n_out / N_out,  n_in / N_in)

relative positions in [0, 1] plus the layer's size relative to its full size ``N``. A narrower
network samples the same interval more coarsely, which is what lets one model produce any width.
A bias is one more query per output unit with ``j`` absent (input position 0, bias flag 1).
For a convolution one query returns the unit pair's whole k x k kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neumeta_cl.hypernet.layout import LayerShape

N_COORDS = 5  # layer, out position, in position, out size, in size


@dataclass
class Queries:
    """All weight and bias queries of one network, grouped by layer (weights first, then biases)."""

    coords: torch.Tensor  # [Q, 5] the continuous coordinates above
    is_bias: torch.Tensor  # [Q, 1] 1.0 on bias rows
    spacing: torch.Tensor  # [Q, 2] grid spacing of (out, in) positions; 0 where the side is fixed
    layer: torch.Tensor  # [Q] generated-layer index of each row
    bounds: list[tuple[int, int, int]]  # per layer: (first row, first bias row, end row)

    def __len__(self) -> int:
        return self.coords.shape[0]


def _positions(n: int) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float32) + 0.5) / n


def weight_queries(shapes: list[LayerShape], full: list[LayerShape]) -> Queries:
    """Queries for a network of ``shapes``; ``full`` gives each layer's full sizes (same family)."""
    L = len(shapes)
    coords, bias, spacing, layer, bounds, row = [], [], [], [], [], 0
    for l, (s, f) in enumerate(zip(shapes, full)):
        out_pos, in_pos = _positions(s.n_out), _positions(s.n_in)
        oo, ii = torch.meshgrid(out_pos, in_pos, indexing="ij")
        n_w, n_b = s.n_out * s.n_in, s.n_out
        lay = torch.full((n_w + n_b,), l / max(L - 1, 1))
        out_c = torch.cat([oo.reshape(-1), out_pos])
        in_c = torch.cat([ii.reshape(-1), torch.zeros(n_b)])
        size = torch.tensor([s.n_out / f.n_out, s.n_in / f.n_in]).expand(n_w + n_b, 2)
        coords.append(torch.cat([lay[:, None], out_c[:, None], in_c[:, None], size], 1))
        bias.append(torch.cat([torch.zeros(n_w), torch.ones(n_b)])[:, None])
        sp = torch.tensor([1.0 / s.n_out if s.resizable_out else 0.0, 1.0 / s.n_in if s.resizable_in else 0.0])
        sp = sp.expand(n_w + n_b, 2).clone()
        sp[n_w:, 1] = 0.0  # a bias has no input position to move
        spacing.append(sp)
        layer.append(torch.full((n_w + n_b,), l, dtype=torch.long))
        bounds.append((row, row + n_w, row + n_w + n_b))
        row += n_w + n_b
    return Queries(torch.cat(coords), torch.cat(bias), torch.cat(spacing), torch.cat(layer), bounds)


def jitter(coords: torch.Tensor, spacing: torch.Tensor, scale: float, generator: torch.Generator | None = None):
    """Coordinate noise for training: move each resizable position uniformly within +-scale/2 of its
    grid cell, so the model learns the function between the samples, not just on them."""
    if scale <= 0:
        return coords
    noise = (torch.rand(spacing.shape, generator=generator) - 0.5).to(coords.device) * spacing * scale
    out = coords.clone()
    out[:, 1:3] += noise
    return out


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF positional encoding: [x, sin(2^k pi x), cos(2^k pi x)] for k < n_freqs, per column."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    angles = x[..., None] * freqs  # [Q, C, F]
    enc = torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)
    return torch.cat([x, enc], -1)


N_POSITIONS = 3  # layer, out position, in position: Fourier-encoded; the two sizes stay raw


def encode(coords: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """The INR's view of a coordinate row: Fourier features of the positions, the sizes as they are.

    Positions need high frequencies to tell 64 neighbouring units apart. Sizes must not get them:
    a size never seen in training (an unseen width) should land between its neighbours, and
    sin(2^5 pi s) of it would not."""
    return torch.cat([fourier_features(coords[:, :N_POSITIONS], n_freqs), coords[:, N_POSITIONS:]], 1)


def encoded_dim(n_freqs: int) -> int:
    return N_POSITIONS * (1 + 2 * n_freqs) + (N_COORDS - N_POSITIONS)
