"""REPAIR (Jordan et al., ICLR 2023) and the BatchNorm reset: fix the statistics of interpolated nets.

Averaging two (aligned) nets shrinks the variance of every hidden unit (the average of two
imperfectly correlated units varies less than either), layer after layer, until the output
collapses; barriers measured on such nets mostly measure that collapse. REPAIR gives each unit of
the interpolated net theta(t) back the statistics the endpoints suggest:

    target mean  mu_t    = (1 - t) mu_A + t mu_B
    target std   sigma_t = (1 - t) sigma_A + t sigma_B

measured on data at each unit's pre-activation (MLP: the Linear output; CNN: the BatchNorm output,
or the conv output without BatchNorm). The correction z' = (z - mu) * sigma_t / sigma + mu_t, with
mu, sigma the interpolated net's own statistics, is folded into the layer producing z (Linear/Conv
rows, or BatchNorm's affine weight and bias), layer by layer, so later layers see corrected inputs.
The net keeps its structure.

For BatchNorm nets the first remedy is simpler: the running statistics of theta(t) are not the
interpolation of the endpoints', so recompute them on data (``reset_batchnorm_``). ``repair`` does
that first, then the per-unit correction.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from neumeta_cl.morph.report import has_batchnorm, mode
from neumeta_cl.morph.surgery import batchnorm


def _split(data):
    if isinstance(data, (tuple, list)):
        return data[0], (data[1] if len(data) > 1 else None)
    return data, None


def _tasks(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    return t if t is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)


@torch.no_grad()
def reset_batchnorm_(net: nn.Module, data, batch_size: int = 512) -> nn.Module:
    """In place: every BatchNorm's running mean/var become the exact statistics of its input over
    ``data`` (x or (x, t)), as a cumulative average over batches (momentum None). No-op without BN."""
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return net
    x, t = _split(data)
    t = _tasks(x, t)
    momenta = [bn.momentum for bn in bns]
    was = net.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    for s in range(0, len(x), batch_size):
        net(x[s:s + batch_size], t[s:s + batch_size])
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    net.train(was)
    return net


def _unit_module(block: nn.Sequential) -> nn.Module:
    """Where a block's units are measured and corrected: its BatchNorm if it has one, else its weight layer."""
    return batchnorm(block) or block[0]


@torch.no_grad()
def unit_statistics(net: nn.Module, data, layers: list[int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) of every unit of the hidden layers, at ``_unit_module``'s output, eval mode."""
    x, t = _split(data)
    layers = list(range(net.depth)) if layers is None else layers
    outs: dict[int, torch.Tensor] = {}
    hooks = [_unit_module(net.blocks[i]).register_forward_hook(lambda m, i_, o, i=i: outs.__setitem__(i, o))
             for i in layers]
    try:
        with mode(net, False):
            net(x, _tasks(x, t))
    finally:
        for h in hooks:
            h.remove()
    stats = []
    for i in layers:
        z = outs[i].transpose(0, 1).flatten(1).double()  # units x (samples [* positions])
        stats.append((z.mean(1), z.std(1, unbiased=False)))
    return stats


@torch.no_grad()
def correct_units_(module: nn.Module, mean: torch.Tensor, std: torch.Tensor, target_mean: torch.Tensor,
                   target_std: torch.Tensor, eps: float = 1e-8) -> None:
    """In place: the module's outputs z become (z - mean) * target_std / std + target_mean."""
    s = (target_std / (std + eps)).to(module.weight.dtype)
    shift = (target_mean - mean * s.double()).to(module.weight.dtype)
    if isinstance(module, _BatchNorm):
        module.weight.mul_(s)
        module.bias.mul_(s).add_(shift)
        return
    module.weight.mul_(s.view(-1, *([1] * (module.weight.dim() - 1))))
    if module.bias is None:
        module.bias = nn.Parameter(shift.clone())
    else:
        module.bias.mul_(s).add_(shift)


def target_statistics(stats_a, stats_b, t: float):
    """REPAIR's targets: the endpoints' means and stds interpolated at t."""
    return [((1 - t) * ma + t * mb, (1 - t) * sa + t * sb) for (ma, sa), (mb, sb) in zip(stats_a, stats_b)]


@torch.no_grad()
def repair(net_t: nn.Module, net_a: nn.Module, net_b: nn.Module, t: float, data, batch_size: int = 512) -> nn.Module:
    """A copy of the interpolated net ``net_t`` whose hidden units have REPAIR's target statistics on
    ``data`` (x or (x, t)); BatchNorm running statistics reset on the same data first."""
    targets = target_statistics(unit_statistics(net_a, data), unit_statistics(net_b, data), t)
    new = copy.deepcopy(net_t)
    if has_batchnorm(new):
        reset_batchnorm_(new, data, batch_size)
    for layer, (tm, ts) in enumerate(targets):
        (m, s), = unit_statistics(new, data, [layer])
        correct_units_(_unit_module(new.blocks[layer]), m, s, tm, ts)
    return new


__all__ = ["reset_batchnorm_", "unit_statistics", "correct_units_", "target_statistics", "repair"]
