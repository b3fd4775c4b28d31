"""Permutation symmetry of hidden units: the one code path that relabels a net's units.

Hidden unit j of block l is: row j of the block's weight layer (and of its bias), channel j of its
BatchNorm (affine parameters and running statistics), and input feature j of whoever reads the
block (the next block's weight layer or, after the last block, every head). Relabelling all of
them by the same ``order`` (new unit j = old unit ``order[j]``) leaves the function unchanged, in
eval and in train mode. Inputs and class outputs are never permuted.

Used by alignment (``landscape.align``), by the ``permute`` morph operator, and by NeuMeta's TSP
smoothing (``hypernet.smoothing``, on BatchNorm-folded weight lists through ``permute_weights``).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.morph.report import MorphError, MorphResult, finish, split_probe
from neumeta_cl.morph.surgery import batchnorm, check_net, consumers, map_units, reindex_

Weights = list[tuple[torch.Tensor, torch.Tensor]]


def as_order(order, n: int, what: str = "permute") -> torch.Tensor:
    """``order`` as a long tensor, checked to be a permutation of 0..n-1."""
    o = torch.as_tensor(order, dtype=torch.long).flatten()
    if len(o) != n or not torch.equal(torch.sort(o).values, torch.arange(n)):
        raise MorphError(f"{what}: an order must list every unit 0..{n - 1} exactly once; got {len(o)} entries.")
    return o


def permute_weights(weights: Weights, layer: int, order) -> Weights:
    """On a list of (weight, bias) per layer (hidden layers, then the head): layer ``layer``'s
    outputs and layer ``layer + 1``'s inputs reordered alike (the function is unchanged)."""
    order = torch.as_tensor(order, dtype=torch.long)
    out = list(weights)
    w, b = out[layer]
    out[layer] = (w[order], b[order])
    nw, nb = out[layer + 1]
    out[layer + 1] = (nw[:, order], nb)
    return out


def permute_units_(net: nn.Module, layer: int, order) -> None:
    """In place: block ``layer``'s units relabelled by ``order`` (weight rows, bias, BatchNorm
    affine and running statistics), and every reader's input columns alike."""
    block = net.blocks[layer]
    order = as_order(order, net.widths[layer]).to(block[0].weight.device)
    reindex_(block[0], 0, order)
    bn = batchnorm(block)
    if bn is not None:
        reindex_(bn, 0, order)
    for reader in consumers(net, layer):
        reindex_(reader, 1, order)


def permute_net(net: nn.Module, orders: list) -> nn.Module:
    """A copy of ``net`` with hidden layer l relabelled by ``orders[l]`` (None: left alone)."""
    check_net(net, "permute")
    if len(orders) != net.depth:
        raise MorphError(f"permute: the network has {net.depth} hidden layers, got {len(orders)} orders.")
    new = copy.deepcopy(net)
    for layer, order in enumerate(orders):
        if order is not None:
            permute_units_(new, layer, order)
    return new


def permute(net: nn.Module, orders: list, probe=None) -> MorphResult:
    """The morph operator: relabel hidden units (``orders[l]`` for layer l, None = identity).
    Preserves the function; regularisers' anchors and importances follow through the ParamMap."""
    t0 = time.perf_counter()
    check_net(net, "permute")
    if not isinstance(orders, (list, tuple)) or len(orders) != net.depth:
        raise MorphError(f"permute: give one order (or null) per hidden layer; the network has {net.depth}.")
    checked = [None if o is None else as_order(o, w) for o, w in zip(orders, net.widths)]
    if probe is not None:
        split_probe(net, probe)
    new = permute_net(net, checked)
    pm = ParamMap.start(net)
    for layer, order in enumerate(checked):
        if order is not None:
            map_units(pm, new, layer, order)
    pm.seal(new)
    moved = [0 if o is None else int((o != torch.arange(len(o))).sum()) for o in checked]
    return finish("permute", net, new, pm, {"units_moved": moved}, t0, probe, claims_preservation=True)


__all__ = ["as_order", "permute_weights", "permute_units_", "permute_net", "permute"]
