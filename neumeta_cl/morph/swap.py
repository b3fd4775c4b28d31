"""Swap operators: change a net's heads, classes, activations or one block, leaving the rest alone.

add_head        MultiHead: append a new task head; old heads untouched (preserves every old task).
extend_classes  SingleHead: append n_new output rows; old logits unchanged exactly.
set_activation  change the activation of some hidden blocks (not preserving; the change is measured).
replace_block   swap hidden block ``layer`` for one of another width, trained by distillation:
                the new block and the inputs of the layer(s) reading it are fitted (Adam, MSE) so
                that the reader's output -- the next block's pre-activation (for a CNN the conv
                output, before its BatchNorm), or every head's logits after the last block --
                matches the old net's on ``data_x``. Matching the reader's output reproduces
                everything downstream. Warm start: exact duplicate units folded into one (undoes a
                widen), then the ``width`` units with the largest outgoing weights (all of them when
                growing; extra units fresh, outgoing weights 0); if training ends worse on
                ``data_x`` than the warm start, the warm start is kept.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.morph.param_map import DimMap, ParamMap, ParamRule
from neumeta_cl.morph.report import MorphError, MorphResult, finish, mode, split_probe
from neumeta_cl.morph.surgery import (activation_index, batchnorm, check_layer, check_net, consumers, like, path_of,
                                      reindex_, rng, run_blocks, seeded)
from neumeta_cl.nets.activations import ACTIVATIONS, make_activation
from neumeta_cl.nets.heads import MultiHead, SingleHead


def _count(n, what: str, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MorphError(f"{what}: {name} must be a positive integer, got {n!r}.")


def add_head(net, n_classes: int, seed: int = 0, probe=None) -> MorphResult:
    """Append a task head with ``n_classes`` outputs to a MultiHead; detail["head"] is its task index."""
    t0 = time.perf_counter()
    what = f"add_head with {n_classes} classes"
    check_net(net, what)
    if isinstance(net.head, SingleHead):
        raise MorphError(f"{what}: the network has a single shared head; use extend_classes to add classes to it.")
    _count(n_classes, what, "n_classes")
    if probe is not None:
        split_probe(net, probe)
    new = copy.deepcopy(net)
    with seeded(seed):
        new.head.heads.append(like(new.head.heads[0], n_out=n_classes))
    pm = ParamMap.start(net).seal(new)  # the new head's parameters are brand-new
    detail = {"head": len(new.head.heads) - 1, "n_classes": n_classes, "sizes": new.head.sizes}
    return finish("add_head", net, new, pm, detail, t0, probe, claims_preservation=True)


def extend_classes(net, n_new: int, seed: int = 0, probe=None) -> MorphResult:
    """Append ``n_new`` freshly initialised class outputs to a SingleHead."""
    t0 = time.perf_counter()
    what = f"extend_classes by {n_new}"
    check_net(net, what)
    if isinstance(net.head, MultiHead):
        raise MorphError(f"{what}: the network has one head per task; use add_head to add a task head.")
    _count(n_new, what, "n_new")
    if probe is not None:
        split_probe(net, probe)
    new = copy.deepcopy(net)
    lin = new.head.linear
    n = lin.out_features
    index = torch.cat([torch.arange(n), torch.full((n_new,), -1)])  # old rows stay, new rows appended
    with seeded(seed):
        fresh = like(lin, n_out=n + n_new)
    reindex_(lin, 0, index, fresh=fresh)
    pm = ParamMap.start(net)
    for pname in ("weight", "bias"):
        if f"head.linear.{pname}" in pm.rules:
            pm.rules[f"head.linear.{pname}"].dims[0] = DimMap(index)
    pm.seal(new)
    detail = {"from": n, "to": n + n_new}
    return finish("extend_classes", net, new, pm, detail, t0, probe, claims_preservation=True)


def set_activation(net, name: str, layers: list[int] | None = None, probe=None) -> MorphResult:
    """Use activation ``name`` (or "identity") in hidden blocks ``layers`` (None = all)."""
    t0 = time.perf_counter()
    what = f"set_activation {name}"
    check_net(net, what)
    if name != "identity" and name not in ACTIVATIONS:
        raise MorphError(f"{what}: unknown activation '{name}'; valid activations are: {', '.join(sorted([*ACTIVATIONS, 'identity']))}.")
    layers = list(range(net.depth)) if layers is None else ([layers] if isinstance(layers, int) else list(layers))
    for i in layers:
        check_layer(net, i, what)
    if probe is not None:
        split_probe(net, probe)
    new = copy.deepcopy(net)
    before = []
    for i in layers:
        block = new.blocks[i]
        j = activation_index(block)
        before.append(type(block[j]).__name__)
        block[j] = nn.Identity() if name == "identity" else make_activation(name)
    pm = ParamMap.start(net).seal(new)
    same = all(type(new.blocks[i][activation_index(new.blocks[i])]).__name__ == b for i, b in zip(layers, before))
    detail = {"layers": layers, "activation": name, "before": before}
    return finish("set_activation", net, new, pm, detail, t0, probe, claims_preservation=same)


def _readout(net, layer: int, h: torch.Tensor, readers: list[nn.Module]) -> torch.Tensor:
    """Output of the layer(s) that read block ``layer``'s output ``h`` (pooled first before the heads)."""
    if layer + 1 < len(net.blocks):
        return readers[0](h)
    pool = getattr(net, "pool", None)
    z = pool(h) if pool is not None else h
    return torch.cat([r(z) for r in readers], 1)


def _warm_start(blk: nn.Sequential, readers: list[nn.Module], width: int, seed: int) -> None:
    """In place: resize ``blk`` to ``width`` units, starting from its own units. Exact duplicates
    (e.g. Net2Wider replicas) are folded into one unit with their outgoing weights summed -- the
    inverse of widen, and duplicates would otherwise get identical gradients forever. Then the
    ``width`` folded units with the largest outgoing weights are kept; extra units (growing) are
    fresh with outgoing weights 0."""
    lin, bn = blk[0], batchnorm(blk)
    n = lin.weight.shape[0]
    unit_params = [lin.bias] + ([bn.weight, bn.bias, bn.running_mean, bn.running_var] if bn is not None else [])
    signature = torch.cat([lin.weight.detach().flatten(1)] + [t.detach()[:, None] for t in unit_params if t is not None], 1)
    _, group = torch.unique(signature.cpu(), dim=0, return_inverse=True)
    n_groups = int(group.max()) + 1
    fold = F.one_hot(group, n_groups).to(lin.weight)  # [n, groups]: old unit -> folded unit
    norm = sum(torch.einsum("oi...,ig->og...", r.weight.detach(), fold).transpose(0, 1).flatten(1).norm(dim=1) ** 2 for r in readers)
    kept = torch.argsort(norm.cpu(), descending=True, stable=True)[:width].sort().values
    first = torch.full((n_groups,), n).scatter_reduce(0, group, torch.arange(n), "amin")  # one member per group
    index = torch.cat([first[kept], torch.full((width - len(kept),), -1)])
    with seeded(seed):
        fresh_lin, fresh_bn = like(lin, n_out=width), (like(bn, n_out=width) if bn is not None else None)
    reindex_(lin, 0, index, fresh=fresh_lin)
    if bn is not None:
        reindex_(bn, 0, index, fresh=fresh_bn)
    to_new = torch.zeros(n_groups, width).to(fold)
    to_new[kept.to(fold.device), torch.arange(len(kept), device=fold.device)] = 1  # folded unit -> new unit
    for r in readers:
        r.weight = nn.Parameter(torch.einsum("oi...,ij->oj...", r.weight.detach(), fold @ to_new).contiguous())
        setattr(r, "in_features" if isinstance(r, nn.Linear) else "in_channels", width)


def _distill(net, layer: int, h_in, target, steps: int, lr: float, batch_size: int, seed: int) -> tuple[float, float, str]:
    """Fit block ``layer`` and its readers (Adam on the MSE to ``target``); returns the MSE on all
    of h_in before and after, and which was kept ("trained" or "warm start" if training did worse)."""
    blk, readers = net.blocks[layer], consumers(net, layer)
    modules = [blk, *readers]
    mse = lambda: float(F.mse_loss(_readout(net, layer, blk(h_in), readers), target))
    with torch.no_grad(), mode(blk, False):
        before = mse()
    start = copy.deepcopy([m.state_dict() for m in modules])
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=lr)
    g = rng(seed)
    was = blk.training
    blk.train()
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(len(h_in), (min(batch_size, len(h_in)),), generator=g).to(h_in.device)
            loss = F.mse_loss(_readout(net, layer, blk(h_in[idx]), readers), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    bn = batchnorm(blk)
    if bn is not None:  # recalibrate: running stats = the new features' exact statistics on h_in
        momentum, bn.momentum = bn.momentum, None
        bn.reset_running_stats()
        with torch.no_grad():
            for s in range(0, len(h_in), 1024):
                blk(h_in[s:s + 1024])
        bn.momentum = momentum
    blk.train(was)
    with torch.no_grad(), mode(blk, False):
        after = mse()
    if after > before:  # the warm start was better (e.g. when growing it is exact)
        for m, sd in zip(modules, start):
            m.load_state_dict(sd)
        return before, before, "warm start"
    return before, after, "trained"


def replace_block(net, layer: int, width: int, data_x: torch.Tensor | None = None, steps: int = 200, lr: float = 3e-3,
                  batch_size: int = 256, activation: str | None = None, seed: int = 0, probe=None) -> MorphResult:
    """Hidden block ``layer`` becomes ``width`` units wide, distilled on ``data_x`` (default: the probe's
    inputs) for ``steps`` Adam steps; ``activation`` None keeps the block's own."""
    t0 = time.perf_counter()
    what = f"replace_block {layer} with width {width}"
    check_layer(net, layer, what)
    _count(width, what, "width")
    if activation is not None and activation != "identity" and activation not in ACTIVATIONS:
        raise MorphError(f"{what}: unknown activation '{activation}'; valid activations are: {', '.join(sorted([*ACTIVATIONS, 'identity']))}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise MorphError(f"{what}: steps must be a non-negative integer, got {steps!r}.")
    if probe is not None:
        split_probe(net, probe)
    distill_on = "data_x"
    if data_x is None:
        if probe is None:
            raise MorphError(f"{what}: distillation needs inputs; pass data_x (buffered samples) or a probe.")
        data_x, distill_on = split_probe(net, probe)[0], "probe"

    # Teacher, once, in eval mode: the block's input and what the layer(s) reading it output.
    with torch.no_grad(), mode(net, False):
        h_in = run_blocks(net, data_x, layer)
        target = _readout(net, layer, net.blocks[layer](h_in), consumers(net, layer))

    new = copy.deepcopy(net)
    blk = new.blocks[layer]
    _warm_start(blk, consumers(new, layer), width, seed)
    if activation is not None:
        blk[activation_index(blk)] = nn.Identity() if activation == "identity" else make_activation(activation)
    mse_start, mse_end, kept = _distill(new, layer, h_in, target, steps, lr, batch_size, seed)

    # Everything distillation trained is brand-new for regularisers; the rest maps to itself.
    pm, paths = ParamMap.start(net), path_of(new)
    for m in [blk, *consumers(new, layer)]:
        for pname, _ in m.named_parameters():
            pm.rules[f"{paths[m]}.{pname}"] = ParamRule(None)
    pm.seal(new)

    detail = {"layer": layer, "from": net.widths[layer], "to": width, "distill_on": distill_on, "n_samples": len(data_x),
              "target": "next layer pre-activation" if layer + 1 < net.depth else "logits", "steps": steps, "lr": lr,
              "distill_mse_start": mse_start, "distill_mse_end": mse_end, "kept": kept, "target_var": float(target.var())}
    return finish("replace_block", net, new, pm, detail, t0, probe, claims_preservation=False)
