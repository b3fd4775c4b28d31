"""Permutation alignment: relabel net B's hidden units so B sits as close to net A as it can.

Many networks are the same function up to a relabelling of hidden units; two nets trained from
different seeds usually differ mostly by such a relabelling, and interpolating between them only
makes sense once it is undone. Both methods return one order per hidden layer; ``align`` applies
them through the one permutation code path (``morph.permute``), so the result computes exactly
B's function. Inputs and outputs (every head) are never permuted.

Weight matching (Git Re-Basin, Ainsworth et al. 2023, Alg. 1): maximise sum_l <W_l^A, P_l W_l^B P_{l-1}^T>
by coordinate descent: visit the layers in a random order; for layer l, with every other P fixed,
the objective is linear in P_l, with

    C[j, k] = <A's incoming row j, B's incoming row k (inputs relabelled by P_{l-1})>
            + <A's outgoing column j, B's outgoing column k (outputs relabelled by P_{l+1})>

(incoming: weight, bias, BatchNorm weight and bias; outgoing: the next layer's weights, or every
head's); one linear assignment (``scipy.optimize.linear_sum_assignment``) solves it. Repeat until a
full sweep changes no permutation.

Activation matching (Ainsworth et al. 2023; Jordan et al. 2023): for each hidden layer, pair A's
and B's units to maximise the summed Pearson correlation of their outputs on a batch
(CNN: every position of a channel is a sample). Each layer is one assignment, independent of the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from neumeta_cl.errors import UserError
from neumeta_cl.morph.permute import permute_net
from neumeta_cl.morph.report import mode
from neumeta_cl.morph.surgery import batchnorm, check_net, head_linears
from neumeta_cl.nets.structure import describe

METHODS = ("weights", "activations")


class AlignError(UserError):
    """Two nets that cannot be aligned (different structures), or an unknown method."""


@dataclass
class Alignment:
    net: nn.Module  # B, relabelled
    orders: list[torch.Tensor]  # orders[l][j] = B's unit placed at position j of layer l
    method: str
    seconds: float
    sweeps: int = 1  # weight matching: coordinate-descent sweeps until no change
    distance_before: float = 0.0  # ||theta_A - theta_B|| over parameters
    distance_after: float = 0.0
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"method": self.method, "seconds": self.seconds, "sweeps": self.sweeps,
                "distance_before": self.distance_before, "distance_after": self.distance_after,
                "units_moved": [int((o != torch.arange(len(o))).sum()) for o in self.orders]}


def check_same_structure(a: nn.Module, b: nn.Module, what: str) -> None:
    for net in (a, b):
        check_net(net, what)
    if describe(a) != describe(b):
        raise AlignError(f"{what}: the two networks differ in structure (widths {a.widths} vs {b.widths}, or heads, "
                         f"layers); both ends of a path must have the same structure.")


def _incoming(net: nn.Module, layer: int, prev_order: torch.Tensor | None) -> torch.Tensor:
    """Per unit of ``layer``: incoming weights (inputs relabelled by ``prev_order``), bias, BN affine."""
    block = net.blocks[layer]
    w = block[0].weight.detach()
    if prev_order is not None:
        w = w[:, prev_order]
    cols = [w.flatten(1)]
    if block[0].bias is not None:
        cols.append(block[0].bias.detach()[:, None])
    bn = batchnorm(block)
    if bn is not None and bn.affine:
        cols += [bn.weight.detach()[:, None], bn.bias.detach()[:, None]]
    return torch.cat(cols, 1).double()


def _outgoing(net: nn.Module, layer: int, next_order: torch.Tensor | None) -> torch.Tensor:
    """Per unit of ``layer``: the weights that read it (the next layer's, its outputs relabelled by
    ``next_order``; or every head's)."""
    if layer + 1 < len(net.blocks):
        w = net.blocks[layer + 1][0].weight.detach()
        if next_order is not None:
            w = w[next_order]
        return w.transpose(0, 1).flatten(1).double()
    return torch.cat([h.weight.detach().transpose(0, 1) for h in head_linears(net)], 1).double()


def _assign(cost: torch.Tensor) -> torch.Tensor:
    _, col = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
    return torch.as_tensor(col, dtype=torch.long)


def weight_matching(net_a: nn.Module, net_b: nn.Module, seed: int = 0, max_sweeps: int = 100) -> tuple[list[torch.Tensor], int]:
    """Git Re-Basin weight matching; returns (orders, sweeps)."""
    depth = net_a.depth
    orders = [torch.arange(w) for w in net_b.widths]
    g = torch.Generator().manual_seed(int(seed))
    # A layer's cost has two terms, each depending on one neighbour's order only; late sweeps change
    # few orders, so each term is kept with the neighbour order it was computed for.
    cache: dict[tuple[int, str], tuple[torch.Tensor | None, torch.Tensor]] = {}

    def term(layer: int, side: str, order: torch.Tensor | None) -> torch.Tensor:
        hit = cache.get((layer, side))
        if hit is not None and (order is None or torch.equal(hit[0], order)):
            return hit[1]
        if side == "in":
            value = _incoming(net_a, layer, None) @ _incoming(net_b, layer, order).T
        else:
            value = _outgoing(net_a, layer, None) @ _outgoing(net_b, layer, order).T
        cache[(layer, side)] = (None if order is None else order.clone(), value)
        return value

    solved: dict[int, tuple] = {}  # layer -> the neighbours' orders its last assignment was solved with
    same = lambda u, v: (u is None and v is None) or (u is not None and v is not None and torch.equal(u, v))
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        changed = False
        for layer in torch.randperm(depth, generator=g).tolist():
            prev = orders[layer - 1] if layer > 0 else None
            nxt = orders[layer + 1] if layer + 1 < depth else None
            last = solved.get(layer)
            if last is not None and same(last[0], prev) and same(last[1], nxt):
                continue  # same cost as last time: the same assignment, no change
            solved[layer] = (None if prev is None else prev.clone(), None if nxt is None else nxt.clone())
            cost = term(layer, "in", prev) + term(layer, "out", nxt)
            new = _assign(cost)
            rows = torch.arange(len(new))
            # Only a strictly better assignment counts as a change (ties would loop forever).
            if float(cost[rows, new].sum()) > float(cost[rows, orders[layer]].sum()) + 1e-9 * float(cost.abs().max()):
                orders[layer], changed = new, True
        if not changed:
            break
    return orders, sweeps


@torch.no_grad()
def hidden_outputs(net: nn.Module, x: torch.Tensor, t: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every hidden block's output on ``x`` (eval mode) as (samples, units): CNN positions are samples."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in net.blocks]
    try:
        with mode(net, False):
            net(x, t if t is not None else torch.zeros(len(x), dtype=torch.long, device=x.device))
    finally:
        for h in hooks:
            h.remove()
    return [o.transpose(0, 1).flatten(1).transpose(0, 1) if o.dim() > 2 else o for o in outs]


def correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation between every column of ``a`` and every column of ``b``: (units_a, units_b)."""
    a, b = a.double(), b.double()
    za = (a - a.mean(0)) / (a.std(0, unbiased=False) + eps)
    zb = (b - b.mean(0)) / (b.std(0, unbiased=False) + eps)
    return za.T @ zb / len(a)


def activation_matching(net_a: nn.Module, net_b: nn.Module, x: torch.Tensor, t: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per hidden layer, the assignment of B's units to A's that maximises summed correlation."""
    acts_a, acts_b = hidden_outputs(net_a, x, t), hidden_outputs(net_b, x, t)
    return [_assign(correlation(a, b)) for a, b in zip(acts_a, acts_b)]


def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    pb = dict(b.named_parameters())
    return float(sum(((p.detach() - pb[n].detach()) ** 2).sum() for n, p in a.named_parameters()) ** 0.5)


def align(net_a: nn.Module, net_b: nn.Module, method: str = "weights", data=None, seed: int = 0,
          max_sweeps: int = 100) -> Alignment:
    """A relabelled copy of ``net_b``: the same function, as close to ``net_a`` as ``method`` makes it.

    ``data``: inputs ``x`` or ``(x, t)`` (activation matching needs it; weight matching ignores it)."""
    if method not in METHODS:
        raise AlignError(f"Unknown alignment method '{method}'; valid methods are: {', '.join(METHODS)}.")
    check_same_structure(net_a, net_b, f"align ({method})")
    t0 = time.perf_counter()
    sweeps = 1
    if method == "weights":
        orders, sweeps = weight_matching(net_a, net_b, seed, max_sweeps)
    else:
        if data is None:
            raise AlignError("align with method=activations needs data: pass data=x or data=(x, t).")
        x, t = (data[0], data[1] if len(data) > 1 else None) if isinstance(data, (tuple, list)) else (data, None)
        orders = activation_matching(net_a, net_b, x, t)
    aligned = permute_net(net_b, orders)
    seconds = time.perf_counter() - t0
    return Alignment(aligned, orders, method, seconds, sweeps,
                     parameter_distance(net_a, net_b), parameter_distance(net_a, aligned))


__all__ = ["METHODS", "AlignError", "Alignment", "align", "weight_matching", "activation_matching", "correlation",
           "hidden_outputs", "check_same_structure", "parameter_distance"]
