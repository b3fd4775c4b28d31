"""Shared surgery on morphable nets: find a hidden layer, its BatchNorm, the layers that read its
output, and re-index a layer's units in place (on the operator's private copy).

A morphable net has ``blocks`` (hidden layers, each an ``nn.Sequential`` starting with a Linear or
ConvNd, then an optional BatchNorm, the activation, an optional pooling) and a ``head``
(SingleHead or MultiHead). Unit/channel j of block i is input feature j of whoever reads it: the
next block's first layer, or, after the last block, every head (CNN: global average pooling maps
channel j to feature j), so one index serves both sides.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from neumeta_cl.morph.param_map import gather
from neumeta_cl.morph.report import MorphError
from neumeta_cl.nets.heads import MultiHead, SingleHead

WEIGHTED = (nn.Linear, _ConvNd)


def check_net(net: nn.Module, what: str) -> None:
    blocks = getattr(net, "blocks", None)
    ok = isinstance(blocks, nn.ModuleList) and len(blocks) > 0 and isinstance(getattr(net, "head", None), (SingleHead, MultiHead))
    if not ok or not all(isinstance(b, nn.Sequential) and isinstance(b[0], WEIGHTED) for b in blocks):
        raise MorphError(f"{what}: {type(net).__name__} is not a morphable net (hidden `blocks` of Linear/Conv layers and a task head).")


def check_layer(net: nn.Module, layer, what: str) -> nn.Sequential:
    check_net(net, what)
    n = len(net.blocks)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise MorphError(f"{what}: the network has no hidden layer {layer!r}; valid layers are {', '.join(map(str, range(n)))}.")
    return net.blocks[layer]


def batchnorm(block: nn.Sequential) -> _BatchNorm | None:
    return next((m for m in block if isinstance(m, _BatchNorm)), None)


def activation_index(block: nn.Sequential) -> int:
    """Position of the activation: the first module that is not the weight layer, a BatchNorm or a pooling."""
    for i, m in enumerate(block):
        if i > 0 and not isinstance(m, (_BatchNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
            return i
    raise MorphError("This block has no activation module to change.")


def head_linears(net: nn.Module) -> list[nn.Linear]:
    return [net.head.linear] if isinstance(net.head, SingleHead) else list(net.head.heads)


def consumers(net: nn.Module, layer: int) -> list[nn.Module]:
    """The layers whose input features are block ``layer``'s units."""
    return [net.blocks[layer + 1][0]] if layer + 1 < len(net.blocks) else head_linears(net)


def path_of(net: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in net.named_modules()}


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def seeded(seed: int):
    """Default (kaiming) init of freshly built modules, reproducible and without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def like(m: nn.Module, n_in: int | None = None, n_out: int | None = None) -> nn.Module:
    """A freshly initialised module of m's kind and hyper-parameters, with other sizes, on m's device."""
    p = next(m.parameters(), None)
    kw = {"device": p.device, "dtype": p.dtype} if p is not None else {}
    if isinstance(m, nn.Linear):
        return nn.Linear(n_in or m.in_features, n_out or m.out_features, bias=m.bias is not None, **kw)
    if isinstance(m, _ConvNd):
        return type(m)(n_in or m.in_channels, n_out or m.out_channels, m.kernel_size, m.stride, m.padding,
                       m.dilation, m.groups, m.bias is not None, m.padding_mode, **kw)
    if isinstance(m, _BatchNorm):
        return type(m)(n_out or m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, **kw)
    raise TypeError(f"cannot rebuild {type(m).__name__}")


def reindex_(m: nn.Module, dim: int, index: torch.Tensor, scale: torch.Tensor | None = None,
             fresh: nn.Module | None = None) -> None:
    """In place: m's output (dim 0) or input (dim 1) units become old[index] * scale, and ``fresh``'s
    values where index == -1. BatchNorm re-indexes its affine parameters and running stats."""
    if isinstance(m, _BatchNorm):
        assert dim == 0 and scale is None
        tensors = ["weight", "bias", "running_mean", "running_var"]
    else:
        tensors = ["weight", "bias"] if dim == 0 else ["weight"]
    for attr in tensors:
        t = getattr(m, attr, None)
        if t is None:
            continue
        new = gather(t.detach(), dim, index, scale, getattr(fresh, attr) if fresh is not None else None)
        setattr(m, attr, nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new)
    n = len(index)
    if isinstance(m, nn.Linear):
        setattr(m, "out_features" if dim == 0 else "in_features", n)
    elif isinstance(m, _ConvNd):
        setattr(m, "out_channels" if dim == 0 else "in_channels", n)
    else:
        m.num_features = n


def run_blocks(net: nn.Module, x: torch.Tensor, upto: int) -> torch.Tensor:
    """The output of hidden blocks 0..upto-1 (the input of block ``upto``), before any head pooling."""
    h = x.flatten(1) if isinstance(net.blocks[0][0], nn.Linear) else x
    for block in net.blocks[:upto]:
        h = block(h)
    return h


def map_units(pm, new: nn.Module, layer: int, index: torch.Tensor, scale: torch.Tensor | None = None) -> None:
    """Record in ParamMap ``pm`` that block ``layer``'s units were re-indexed by ``index``: its weight
    layer's outputs and BatchNorm along dim 0, and its readers' inputs along dim 1 (scaled)."""
    from neumeta_cl.morph.param_map import DimMap

    block, paths = new.blocks[layer], path_of(new)
    for m, dim, s in [(block[0], 0, None), (batchnorm(block), 0, None)] + [(c, 1, scale) for c in consumers(new, layer)]:
        if m is None:
            continue
        for pname, _ in m.named_parameters(recurse=False):
            if dim == 0 or pname == "weight":  # a reader's bias does not depend on its inputs
                pm.rules[f"{paths[m]}.{pname}"].dims[dim] = DimMap(index, s)
