"""Slimmable networks (Yu et al. 2019): the network of a narrower width is the first units of
every hidden layer of the full one, so one set of weights holds a network of every width.

Class-incremental NeuMeta's task classifier is one (``strategies.task_classifier`` trains it):
a deployment at 25% width carries a 25%-wide task classifier, never the full one.
"""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.hypernet.layout import TargetLayout

Weights = list[tuple[torch.Tensor, torch.Tensor]]


def layers(net: nn.Module) -> Weights:
    """(weight, bias) of every layer of a BatchNorm-free single-head MLP or CNN (the parameters
    themselves, so gradients reach them)."""
    return [(block[0].weight, block[0].bias) for block in net.blocks] + [(net.head.linear.weight, net.head.linear.bias)]


def slice_weights(weights: Weights, widths) -> Weights:
    """The narrower network inside a slimmable one: hidden layer ``l`` keeps its first ``widths[l]``
    units (rows of its weight and bias) and the inputs from the units kept before it; the input
    channels and the class outputs are never cut."""
    out, n_in = [], None
    for l, (w, b) in enumerate(weights):
        n_out = widths[l] if l < len(widths) else w.shape[0]
        w = w[:n_out] if n_in is None else w[:n_out, :n_in]
        out.append((w, b[:n_out]))
        n_in = n_out
    return out


@torch.no_grad()
def narrowed(layout: TargetLayout, net: nn.Module, widths) -> nn.Module:
    """The ordinary network of ``widths`` inside the slimmable ``net`` (a copy, in eval mode)."""
    widths = layout.check_widths(widths)
    small = layout.build(widths, net.head.linear.out_features)
    small.load_state_dict(TargetLayout.state_dict([(w.clone(), b.clone()) for w, b in slice_weights(layers(net), widths)]))
    return small.to(net.head.linear.weight.device).eval()
