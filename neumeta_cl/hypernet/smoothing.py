"""Intra-model smoothness (NeuMeta, Sec. 3.2): reorder hidden units so neighbours look alike.

A trained network's hidden units come in arbitrary order; an INR fitting weights as a function of
unit position would have to learn that noise. Permuting each hidden layer's units (with the next
layer's inputs) does not change the function, so we pick the order that makes neighbouring units
closest: a shortest Hamiltonian path through the units, solved as a TSP (fast-tsp) with a dummy
node that turns its tour into a path. Input channels and class outputs are never permuted.
"""

from __future__ import annotations

import fast_tsp
import torch
from torch import nn

from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.morph.permute import permute_weights

Weights = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv(+bias) followed by eval-mode BatchNorm as one conv: w' = w * g, b' = (b - mean) * g + beta,
    with g = gamma / sqrt(var + eps)."""
    g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    w = weight * g.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean) * g + bn.bias


@torch.no_grad()
def layer_weights(net: nn.Module) -> Weights:
    """(weight, bias) of every layer of a single-head MLP or CNN, BatchNorm folded in (eval mode)."""
    out = []
    for block in net.blocks:
        layer = block[0]
        bn = next((m for m in block if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)
        w, b = (layer.weight, layer.bias) if bn is None else fold_batchnorm(layer.weight, layer.bias, bn)
        out.append((w.detach().clone(), b.detach().clone()))
    head = net.head.linear
    out.append((head.weight.detach().clone(), head.bias.detach().clone()))
    return out


def load_weights(layout: TargetLayout, weights: Weights, n_classes: int) -> nn.Module:
    """The BatchNorm-free network of ``layout`` holding ``weights``."""
    widths = [w.shape[0] for w, _ in weights[:-1]]
    net = layout.build(widths, n_classes)
    net.load_state_dict(TargetLayout.state_dict(weights))
    return net.eval()


def hamiltonian_path(points: torch.Tensor, seconds: float) -> list[int]:
    """A short path visiting every row of ``points`` once (Euclidean distances)."""
    n = points.shape[0]
    if n <= 2:
        return list(range(n))
    d = torch.cdist(points.double(), points.double())
    # fast-tsp takes integer distances up to 65535: scale the largest to 60000.
    d = torch.round(d / d.max().clamp_min(1e-12) * 60_000).long()
    full = torch.zeros(n + 1, n + 1, dtype=torch.long)  # node n: the dummy, at distance 0 from all
    full[:n, :n] = d
    tour = fast_tsp.find_tour(full.tolist(), duration_seconds=seconds)
    k = tour.index(n)
    path = tour[k + 1:] + tour[:k]
    # The solver returns either direction of the same tour from run to run; fixing one makes a
    # run repeat exactly (the teacher's unit order, hence the INR's targets, depends on it).
    return path if path[0] < path[-1] else path[::-1]


def path_length(points: torch.Tensor, order) -> float:
    p = points[list(order)]
    return float((p[1:] - p[:-1]).norm(dim=1).sum())


def unit_features(weights: Weights, layer: int) -> torch.Tensor:
    """What a hidden unit is: its incoming weights, bias and outgoing weights, as one row."""
    w, b = weights[layer]
    nxt = weights[layer + 1][0]
    return torch.cat([w.flatten(1), b[:, None], nxt.transpose(0, 1).flatten(1)], 1)


def permute_units(weights: Weights, layer: int, order) -> Weights:
    """Reorder layer ``layer``'s units and the next layer's inputs alike (the function is unchanged);
    the shared permutation code path, ``morph.permute``."""
    return permute_weights(weights, layer, order)


def smooth(weights: Weights, seconds: float) -> tuple[Weights, list[list[int]]]:
    """Every hidden layer reordered along a shortest Hamiltonian path; returns the orders too."""
    orders = []
    for layer in range(len(weights) - 1):
        order = hamiltonian_path(unit_features(weights, layer), seconds)
        weights = permute_units(weights, layer, order)
        orders.append(order)
    return weights, orders


def total_variation(weights: Weights) -> float:
    """NeuMeta's total variation: sum of |differences| between neighbouring units' weights, along
    every hidden (permutable) axis: the output axis of hidden layers, the input axis of the layers
    after them."""
    tv = 0.0
    for l, (w, b) in enumerate(weights):
        if l < len(weights) - 1:  # outputs are hidden units
            tv += float((w[1:] - w[:-1]).abs().sum() + (b[1:] - b[:-1]).abs().sum())
        if l > 0:  # inputs are hidden units
            tv += float((w[:, 1:] - w[:, :-1]).abs().sum())
    return tv


__all__ = ["fold_batchnorm", "layer_weights", "load_weights", "hamiltonian_path", "path_length", "unit_features",
           "permute_units", "smooth", "total_variation"]
