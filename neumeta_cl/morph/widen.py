"""Net2WiderNet (Chen, Goodfellow & Shlens, ICLR 2016): grow hidden layer ``layer`` to ``to`` units.

With g: new unit -> old unit (g(j) = j for the first n units, a random old unit for the rest) and
k(u) = number of new units copying u (``copies="even"``: every old unit is copied as often as the
others, give or take one, so a 4x widening copies each unit exactly 4 times):

    W_in_new[j]       = W_in[g(j)]           (incoming weights, bias, BatchNorm stats and affine)
    W_next_new[:, j]  = W_next[:, g(j)] / k(g(j))

Each replica of u computes exactly u's activation, and the next layer sums k of them, each
weighted 1/k: the function is unchanged (in eval and in train mode, since a replica's BatchNorm
batch statistics equal the original's). The next layer is the next block or, after the last
block, every task head. ``init="zero"`` gives new units random incoming and zero outgoing weights
(also preserving); ``init="random"`` initialises both afresh (not preserving). ``noise`` > 0
(copy only) adds N(0, (noise * std W_in)^2) to the replicas' incoming weights so they do not
stay identical forever (gradients of exact copies are identical); it breaks exact preservation.
"""

from __future__ import annotations

import copy
import time

import torch

from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.morph.report import MorphError, MorphResult, finish, split_probe
from neumeta_cl.morph.surgery import batchnorm, check_layer, consumers, like, map_units, reindex_, rng, seeded

INITS = ("copy", "random", "zero")
COPIES = ("random", "even")  # which old units the new ones copy (init="copy")


def widen(net, layer: int, to: int, init: str = "copy", noise: float = 0.0, seed: int = 0, probe=None,
          copies: str = "random") -> MorphResult:
    """Hidden layer ``layer`` (0-based) grows to ``to`` > its width units; ``init`` copy | zero | random;
    ``copies`` random | even: which units the copies copy."""
    t0 = time.perf_counter()
    what = f"widen layer {layer} to {to}"
    block = check_layer(net, layer, what)
    if init not in INITS:
        raise MorphError(f"{what}: unknown init '{init}'; valid inits are: {', '.join(INITS)}.")
    if copies not in COPIES:
        raise MorphError(f"{what}: unknown copies '{copies}'; valid choices are: {', '.join(COPIES)}.")
    n = net.widths[layer]
    if isinstance(to, bool) or not isinstance(to, int) or to <= n:
        raise MorphError(f"{what}: the layer already has {n} units; `to` must be larger.")
    if not noise >= 0:
        raise MorphError(f"{what}: noise must be >= 0, got {noise}.")
    if probe is not None:
        split_probe(net, probe)

    g = rng(seed)
    extra = copied_units(n, to, copies, g) if init == "copy" else torch.full((to - n,), -1)
    index = torch.cat([torch.arange(n), extra])  # new unit j copies old unit index[j]; -1 = new
    scale = 1.0 / torch.bincount(index, minlength=n)[index].double() if init == "copy" else None  # cast to the weights' dtype later

    new = copy.deepcopy(net)
    block = new.blocks[layer]
    lin, bn, nxt = block[0], batchnorm(block), consumers(new, layer)
    fresh_lin, fresh_bn, fresh_nxt = None, None, [None] * len(nxt)
    if init != "copy":  # default-initialised layers supply the values of units that copy nothing
        with seeded(seed):
            fresh_lin, fresh_bn = like(lin, n_out=to), (like(bn, n_out=to) if bn is not None else None)
            fresh_nxt = [like(c, n_in=to) for c in nxt]
        if init == "zero":
            for f in fresh_nxt:
                f.weight.data.zero_()

    reindex_(lin, 0, index, fresh=fresh_lin)
    if init == "copy" and noise > 0:
        w = lin.weight.data
        w[n:] += noise * w[:n].std() * torch.randn(w[n:].shape, generator=g).to(w)
    if bn is not None:
        reindex_(bn, 0, index, fresh=fresh_bn)
    for c, f in zip(nxt, fresh_nxt):
        reindex_(c, 1, index, scale, fresh=f)

    pm = ParamMap.start(net)
    map_units(pm, new, layer, index, scale)
    pm.seal(new)

    detail = {"layer": layer, "from": n, "to": to, "init": init, "noise": noise, "seed": seed, "copies": copies}
    preserving = init == "zero" or (init == "copy" and noise == 0)
    return finish("widen", net, new, pm, detail, t0, probe, claims_preservation=preserving)


def copied_units(n: int, to: int, copies: str, g: torch.Generator) -> torch.Tensor:
    """The old unit each of the ``to - n`` new units copies: drawn at random (Net2Wider), or
    ``even``: every old unit once per full round, the last partial round drawn without repeats."""
    if copies == "random":
        return torch.randint(n, (to - n,), generator=g)
    rounds, rest = divmod(to - n, n)
    return torch.cat([torch.arange(n).repeat(rounds), torch.randperm(n, generator=g)[:rest]])
