"""Structured pruning of hidden units/channels.

Removing unit u of a hidden layer removes its slice of every coupled tensor: the layer's outputs,
its BatchNorm, and the inputs of every layer that reads it (the next block, or all task heads after
global pooling) -- the coupling torch-pruning's DependencyGraph finds in these nets, cut with the
same index_select as widen's surgery. The graph itself (about 2 ms to trace and prune through, a
tenth of Taylor pruning the MLP) is only built for l1/l2/random, whose scores are taken over its
groups. Input channels and class outputs are never pruned.

Scores per unit (lower = pruned first). taylor and fisher share one view: removing unit u = setting
a mask m_u (= 1) on its block's output a_u to 0, and dL_n/dm_u = sum over positions of
a_nu * dL_n/da_nu (per sample n, L_n its cross-entropy on ``data``). One forward and one backward
to the hidden activations gives it for every unit; no weight gradient is computed.
  l1 / l2  torch-pruning GroupMagnitudeImportance(p=1 / 2): the norm of every weight of the unit
           across the coupled layers, divided by the layer's mean score (torch-pruning's default
           normaliser, which makes global ranking across layers of different fan-in fair).
  taylor   Taylor on activations (Molchanov et al. 2017, "Pruning Convolutional Neural Networks
           for Resource Efficient Inference", eq. 8): mean_n |dL_n/dm_u|, the first-order change of
           each sample's loss when u is removed, taken absolute per sample and then averaged as
           the paper does for a minibatch, divided by the layer's mean score like l1/l2 (the paper
           rescales per layer too, by the L2 norm, which also depends on the width).
           Not |mean_n dL_n/dm_u|: near a minimum of the mean loss that tends to 0 for every unit
           (m_u rescales u's outgoing weights), leaving noise; pruning 25% of the bench's 5-head
           CNN that way kept 0.54-0.77 test accuracy (2 seeds), against 0.91 per sample.
           Not the group Taylor on weights (Molchanov et al. 2019, torch-pruning's
           GroupTaylorImportance, sum of |w * dL/dw|): it needs dL/dw of every weight, and that of
           the MLP's 784x256 first layer costs as much as its forward (18 and 20 ms for Taylor
           pruning of the bench's single- and 5-head MLP, against 13 and 16 ms on activations).
           Both start from one quantity: sum_n dL_n/dm_u is the sum of w * dL/dw over u's outgoing
           weights, and over its incoming weights and bias for a Linear + ReLU block; the weight
           form takes |.| per weight, this one per sample.
  fisher   Fisher pruning (Theis et al. 2018): the loss increase of removing u is estimated by
           1/2 mean_n (dL_n/dm_u)^2. Already in loss units, so not normalised.
  random   torch-pruning RandomImportance, seeded.
``layer`` set: prune round(ratio * width) units of that layer. ``layer=None``: prune
round(ratio * all hidden units) with the lowest scores over all layers (global).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
import torch_pruning as tp

from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.morph.report import MorphError, MorphResult, finish, mode, split_probe
from neumeta_cl.morph.surgery import batchnorm, check_layer, check_net, consumers, head_linears, map_units, reindex_
from neumeta_cl.nets.cnn import CNN
from neumeta_cl.nets.evaluation import tensor_accuracy
from neumeta_cl.nets.heads import MultiHead
from neumeta_cl.nets.mlp import MLP

CRITERIA = ("l1", "l2", "taylor", "fisher", "random")


def _split_data(data):
    x, y = data[0], data[1]
    t = data[2] if len(data) > 2 and data[2] is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
    return x, y, t


def accuracy(net, data, batch_size: int = 1024) -> float:
    return tensor_accuracy(net, *_split_data(data), batch_size=batch_size)


# Scores are summed 256 samples at a time whatever the pass size: a sample's dm does not depend on the
# pass it is in, so the float additions come in the same order as with the 256-sample passes used
# before pass_size, and the scores (hence the pruned units) do not change with it.
SUM_ROWS = 256


def pass_size(net) -> int:
    """Samples per forward/backward pass of mask_grads. 1024 for nets of Linear blocks: their
    activations are a few widths per sample, and at 256 the fixed cost of a pass (autograd, routing
    a batch of mixed tasks to the heads) was a quarter of Taylor pruning the 5-head MLP. 256 for
    conv nets, whose activations are widths x positions per sample."""
    return 1024 if isinstance(net.blocks[0][0], torch.nn.Linear) else 256


def multihead_input_grad(head: MultiHead, h: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL/dh of L = sum_n CE(head(h, t)_n, y_n) for a batch of mixed tasks: MultiHead.forward's
    routing (each task's rows through its head, -inf where a smaller head has no output), with each
    task's rows as their own autograd leaf. Autograd through MultiHead.forward gives the same values,
    but the backward of each row selection h[rows] fills a zero tensor the size of h (five for five
    tasks: about a quarter of a Taylor score pass on the bench's 5-head MLP); here none is."""
    out = h.new_full((h.shape[0], max(head.sizes)), float("-inf"))
    leaves = []
    for task in t.unique().tolist():
        rows = t == task
        leaf = h[rows].requires_grad_()
        logits = head.heads[task](leaf)
        out[rows, : logits.shape[1]] = logits
        leaves.append((rows, leaf))
    grads = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), [leaf for _, leaf in leaves])
    dh = torch.empty_like(h)  # every row belongs to one task, so every row is written below
    for (rows, _), g in zip(leaves, grads):
        dh[rows] = g
    return dh


def mask_grads(net, layers, data, batch_size: int | None = None):
    """Per chunk of ``data`` (``batch_size`` samples, default ``pass_size(net)``): {layer i: dm (n, width_i)},
    dm[n, u] = dL_n/dm_u, the gradient of sample n's loss w.r.t. a mask on unit u's activation
    (= sum over positions of a_nu * dL_n/da_nu)."""
    x, y, t = _split_data(data)
    batch_size = batch_size or pass_size(net)
    routable = isinstance(net.head, MultiHead) and type(net) in (MLP, CNN)  # net(x, t) is head(features(x), t)
    acts = {}
    hooks = [net.blocks[i].register_forward_hook(lambda m, inp, out, i=i: acts.__setitem__(i, out)) for i in layers]
    try:
        with torch.enable_grad(), mode(net, False):
            for s in range(0, len(x), batch_size):
                xs, ys, ts = x[s:s + batch_size], y[s:s + batch_size], t[s:s + batch_size]
                # Gradients w.r.t. the activations only: autograd skips every weight gradient.
                if routable and ts.unique().numel() > 1:
                    h = net.features(xs)
                    dh = multihead_input_grad(net.head, h.detach(), ts, ys)
                    grads = torch.autograd.grad(h, [acts[i] for i in layers], grad_outputs=dh)
                else:
                    loss = F.cross_entropy(net(xs, ts), ys, reduction="sum")  # sum: dL/da_n is sample n's own
                    grads = torch.autograd.grad(loss, [acts[i] for i in layers])
                dms = {}
                for i, g in zip(layers, grads):
                    dm = g.mul_(acts[i].detach())  # g is ours alone: multiplying in place spares an allocation
                    dms[i] = dm.flatten(2).sum(2) if dm.dim() > 2 else dm  # sum over spatial positions
                yield dms
    finally:
        for h in hooks:
            h.remove()


def _sum_scores(net, layers, data, batch_size, term) -> dict[int, torch.Tensor]:
    """Per layer, the sum of term(dm) over chunks of SUM_ROWS samples (see SUM_ROWS)."""
    scores = {i: 0.0 for i in layers}
    for dms in mask_grads(net, layers, data, batch_size):
        for i, dm in dms.items():
            for s in range(0, len(dm), SUM_ROWS):
                scores[i] = scores[i] + term(dm[s:s + SUM_ROWS])
    return scores


def fisher_unit_scores(net, layers, data, batch_size: int | None = None) -> dict[int, torch.Tensor]:
    """1/2 mean_n (dL_n/dm_u)^2 per unit (Theis et al. 2018)."""
    scores = _sum_scores(net, layers, data, batch_size, lambda dm: 0.5 * dm.pow(2).sum(0))
    n = len(data[0])
    return {i: sc / n for i, sc in scores.items()}


def taylor_unit_scores(net, layers, data, batch_size: int | None = None) -> dict[int, torch.Tensor]:
    """mean_n |dL_n/dm_u| per unit (Molchanov et al. 2017), divided by the layer's mean score."""
    scores = _sum_scores(net, layers, data, batch_size, lambda dm: dm.abs().sum(0))
    n = len(data[0])
    out = {}
    for i, sc in scores.items():
        sc = sc / n
        mean = sc.mean()
        out[i] = sc / mean if mean > 0 else sc  # all zero (e.g. a dead layer): nothing to rescale
    return out


def group_scores(net, layers, criterion: str, example_inputs=None, seed: int = 0) -> dict[int, torch.Tensor]:
    """l1 / l2 / random scores per unit, over torch-pruning's groups of coupled parameters."""
    p = next(net.parameters())
    if example_inputs is None:
        example_inputs = torch.zeros(1, *net.input_shape, device=p.device, dtype=p.dtype)
    x_ex = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    # Trace features once into every head, so the last layer's groups hold every head's weights, also
    # of heads the forward for one task would not touch.
    heads = head_linears(net)
    with torch.enable_grad():  # torch-pruning traces the autograd graph, even when called under no_grad
        DG = tp.DependencyGraph().build_dependency(
            net, example_inputs=x_ex, forward_fn=lambda m, x: [h(f) for f in [m.features(x)] for h in heads], verbose=False)
    root_fn = lambda m: tp.prune_linear_out_channels if isinstance(m, torch.nn.Linear) else tp.prune_conv_out_channels
    groups = {i: DG.get_pruning_group(net.blocks[i][0], root_fn(net.blocks[i][0]), list(range(net.widths[i]))) for i in layers}
    imp = {"l1": tp.importance.GroupMagnitudeImportance(p=1), "l2": tp.importance.GroupMagnitudeImportance(p=2),
           "random": tp.importance.RandomImportance()}[criterion]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # RandomImportance draws from the global RNG
        return {i: imp(g) for i, g in groups.items()}


def prune(net, ratio: float, layer: int | None = None, criterion: str = "l1", data=None,
          example_inputs=None, seed: int = 0, probe=None) -> MorphResult:
    """Remove a ``ratio`` of the hidden units of ``layer`` (None = globally over all hidden layers) with
    the lowest ``criterion`` scores; ``data`` = (x, y[, t]) for taylor/fisher and for accuracy before/after."""
    t0 = time.perf_counter()
    what = f"prune {ratio!r} of " + (f"layer {layer}" if layer is not None else "all hidden layers")
    check_net(net, what)
    if layer is not None:
        check_layer(net, layer, what)
    if criterion not in CRITERIA:
        raise MorphError(f"{what}: unknown criterion '{criterion}'; valid criteria are: {', '.join(CRITERIA)}.")
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise MorphError(f"{what}: ratio must lie strictly between 0 and 1, got {ratio!r}.")
    if criterion in ("taylor", "fisher") and data is None:
        raise MorphError(f"{what}: criterion '{criterion}' needs data=(x, y, t) to compute gradients.")
    if probe is not None:
        split_probe(net, probe)

    layers = [layer] if layer is not None else list(range(net.depth))
    widths = net.widths
    new = copy.deepcopy(net)
    was_training = new.training

    if criterion == "fisher":
        scores = fisher_unit_scores(new, layers, data)
    elif criterion == "taylor":
        scores = taylor_unit_scores(new, layers, data)
    else:
        scores = group_scores(new, layers, criterion, example_inputs, seed)
    new.zero_grad(set_to_none=True)  # a copy of a net with stale .grad must not hand them on
    scores = {i: s.detach().float().cpu() for i, s in scores.items()}

    # Pick the units to drop: per layer, or the lowest scores over all layers.
    if layer is not None:
        k = round(ratio * widths[layer])
        drop = {layer: torch.argsort(scores[layer])[:k]}
    else:
        flat = torch.cat([scores[i] for i in layers])
        owner = torch.cat([torch.full((widths[i],), i) for i in layers])
        unit = torch.cat([torch.arange(widths[i]) for i in layers])
        k = round(ratio * len(flat))
        lowest = torch.argsort(flat, stable=True)[:k]
        drop = {i: unit[lowest[owner[lowest] == i]] for i in layers}
    if k == 0:
        raise MorphError(f"{what}: {ratio!r} of {sum(widths[i] for i in layers)} units rounds to no unit to prune.")
    for i, d in drop.items():
        if len(d) >= widths[i]:
            raise MorphError(f"{what}: that would remove all {widths[i]} units of layer {i}; use a smaller ratio.")

    pm = ParamMap.start(net)
    for i, d in drop.items():
        if len(d) == 0:
            continue
        gone = torch.zeros(widths[i], dtype=torch.bool)
        gone[d] = True
        keep = torch.arange(widths[i])[~gone]  # survivors in order, as torch-pruning keeps them
        block = new.blocks[i]
        for m, dim in [(block[0], 0), (batchnorm(block), 0)] + [(c, 1) for c in consumers(new, i)]:
            if m is not None:
                reindex_(m, dim, keep)
        map_units(pm, new, i, keep)
    new.train(was_training)
    pm.seal(new)

    detail = {"layer": layer, "ratio": ratio, "criterion": criterion, "widths_before": widths, "widths_after": new.widths,
              "pruned": [len(drop.get(i, [])) for i in range(len(widths))]}
    result = finish("prune", net, new, pm, detail, t0, probe, claims_preservation=False)
    if data is not None:
        result.report.detail["acc_before"] = accuracy(net, data)
        result.report.detail["acc_after"] = accuracy(new, data)
    return result
