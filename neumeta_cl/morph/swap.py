"""Swap operators: change a net's heads, classes, activations or one block, leaving the rest alone.

add_head        MultiHead: append a new task head; old heads untouched (preserves every old task).
extend_classes  SingleHead: append n_new output rows; old logits unchanged exactly.
set_activation  change the activation of some hidden blocks (not preserving; the change is measured).
replace_block   swap hidden block ``layer`` for one of another width, trained by distillation:
                the new block and the inputs of the layer(s) reading it are fitted (Adam, MSE) so
                that the reader's output -- the next block's pre-activation (for a CNN the conv
                output, before its BatchNorm), or every head's logits after the last block --
                matches the old net's on ``data_x``. Matching the reader's output reproduces
                everything downstream. Warm start: the ``width`` old units with the largest
                outgoing weights (all of them when growing; extra units fresh, outgoing weights 0);
                if training ends worse on ``data_x`` than the warm start, the warm start is kept.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.morph.param_map import DimMap, ParamMap, ParamRule
from neumeta_cl.morph.report import MorphError, MorphResult, finish, mode, split_probe
from neumeta_cl.morph.surgery import (activation_index, batchnorm, check_layer, check_net, consumers, head_linears,
                                      like, path_of, reindex_, rng, run_blocks, seeded)
from neumeta_cl.nets.activations import ACTIVATIONS, make_activation
from neumeta_cl.nets.heads import MultiHead, SingleHead


def _count(n, what: str, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MorphError(f"{what}: {name} must be a positive integer, got {n!r}.")


def add_head(net, n_classes: int, seed: int = 0, probe=None) -> MorphResult:
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


def replace_block(net, layer: int, width: int, data_x: torch.Tensor | None = None, steps: int = 200, lr: float = 3e-3,
                  batch_size: int = 256, activation: str | None = None, seed: int = 0, probe=None) -> MorphResult:
    t0 = time.perf_counter()
    what = f"replace_block {layer} with width {width}"
    block = check_layer(net, layer, what)
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

    # Teacher: the old block's input and its reader's output, once, in eval mode.
    with torch.no_grad(), mode(net, False):
        h_in = run_blocks(net, data_x, layer)
        target = _readout(net, layer, net.blocks[layer](h_in), consumers(net, layer))

    # Student, warm-started: keep the `width` units with the largest outgoing weights.
    new = copy.deepcopy(net)
    n = net.widths[layer]
    out_norm = sum(c.weight.detach().transpose(0, 1).flatten(1).norm(dim=1) ** 2 for c in consumers(net, layer))
    keep = torch.argsort(out_norm.cpu(), descending=True, stable=True)[:width].sort().values
    index = torch.cat([keep, torch.full((max(width - n, 0),), -1)])
    blk, readers = new.blocks[layer], consumers(new, layer)
    bn = batchnorm(blk)
    with seeded(seed):
        fresh = [like(blk[0], n_out=width), like(bn, n_out=width) if bn is not None else None]
        fresh_readers = [like(r, n_in=width) for r in readers]
    for f in fresh_readers:
        f.weight.data.zero_()  # extra units start silent
    reindex_(blk[0], 0, index, fresh=fresh[0])
    if bn is not None:
        reindex_(bn, 0, index, fresh=fresh[1])
    for r, f in zip(readers, fresh_readers):
        reindex_(r, 1, index, fresh=f)
    if activation is not None:
        blk[activation_index(blk)] = nn.Identity() if activation == "identity" else make_activation(activation)

    student = [*blk.parameters(), *(p for r in readers for p in r.parameters())]
    mse = lambda: float(F.mse_loss(_readout(new, layer, blk(h_in), readers), target))
    with torch.no_grad(), mode(blk, False):
        mse_start = mse()
    start = copy.deepcopy([blk.state_dict(), *(r.state_dict() for r in readers)])
    opt = torch.optim.Adam(student, lr=lr)
    g = rng(seed)
    blk.train()
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(len(h_in), (min(batch_size, len(h_in)),), generator=g).to(h_in.device)
            loss = F.mse_loss(_readout(new, layer, blk(h_in[idx]), readers), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    if bn is not None:  # recalibrate: running stats = exact statistics of the new features on data_x
        momentum, bn.momentum = bn.momentum, None
        bn.reset_running_stats()
        with torch.no_grad():
            for s in range(0, len(h_in), 1024):
                blk(h_in[s:s + 1024])
        bn.momentum = momentum
    blk.train(new.training)
    with torch.no_grad(), mode(blk, False):
        mse_end = mse()
    kept = "trained"
    if mse_end > mse_start:  # the warm start was already better (e.g. growing: it is exact)
        for m, sd in zip([blk, *readers], start):
            m.load_state_dict(sd)
        mse_end, kept = mse_start, "warm start"

    # Everything distillation trained is brand-new for regularisers; the rest maps to itself.
    pm, paths = ParamMap.start(net), path_of(new)
    for m in [blk, *readers]:
        for pname, _ in m.named_parameters():
            pm.rules[f"{paths[m]}.{pname}"] = ParamRule(None)
    pm.seal(new)

    detail = {"layer": layer, "from": n, "to": width, "target": "next layer pre-activation" if layer + 1 < net.depth else "logits",
              "distill_on": distill_on, "n_samples": len(data_x), "steps": steps, "lr": lr,
              "distill_mse_start": mse_start, "distill_mse_end": mse_end, "kept": kept, "target_var": float(target.var())}
    return finish("replace_block", net, new, pm, detail, t0, probe, claims_preservation=False)
