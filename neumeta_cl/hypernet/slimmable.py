"""Slimmable networks (Yu et al. 2019): the network of a narrower width is the first units of
every hidden layer of the full one, so one set of weights holds a network of every width.

Class-incremental NeuMeta's task classifier is one (``strategies.task_classifier`` trains it):
a deployment at 25% width carries a 25%-wide task classifier, never the full one. BatchNorm
layers share their scale and shift across widths; their statistics differ per width, so they are
measured for each width after training (``batchnorm_statistics``: US-Nets' BatchNorm calibration,
Yu & Huang 2019) and kept beside the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.hypernet.layout import TargetLayout

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def slice_state(state: dict[str, torch.Tensor], widths) -> dict[str, torch.Tensor]:
    """The narrower network inside a slimmable one, from the full network's state dict: hidden
    layer ``l`` (``blocks.l.*``: its weights, bias and BatchNorm) keeps its first ``widths[l]``
    units and the inputs from the units kept before it; the input channels and the class outputs
    are never cut (a head reading a pooled grid, ``nets.cnn.GridCNN``, keeps the first
    ``widths[-1]`` channels' cells). Slices are views, so gradients reach the full network."""
    last = max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    cells = state["head.linear.weight"].shape[1] // state[f"blocks.{last}.0.weight"].shape[0]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks" and value.dim() > 0:
            i = int(parts[1])
            value = value[: widths[i]]
            if value.dim() > 1 and i > 0:
                value = value[:, : widths[i - 1]]
        elif key == "head.linear.weight":
            value = value[:, : widths[-1] * cells]
        out[key] = value
    return out


def pool_size(net: nn.Module) -> int:
    """Cells per side of the pooled grid a CNN's head reads (``nets.cnn.GridCNN``); 1 for an MLP."""
    return getattr(net, "pool_size", 1)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def narrowed(layout: TargetLayout, net: nn.Module, widths, statistics: dict | None = None) -> nn.Module:
    """The ordinary network of ``widths`` inside the slimmable ``net`` (a copy, in eval mode), with
    that width's measured ``statistics`` in place of the shared values (``batchnorm_statistics``,
    and the head's bias with the class offsets: ``hypernet.routing.fit_class_offsets``)."""
    widths = layout.check_widths(widths)
    small = layout.build(widths, net.head.linear.out_features, batchnorm=has_batchnorm(net), pool_size=pool_size(net))
    state = {k: v.clone() for k, v in slice_state(net.state_dict(), widths).items()}
    if statistics is not None:
        state.update({k: v.clone() for k, v in statistics.items()})
    small.load_state_dict(state)
    return small.to(net.head.linear.weight.device).eval()


@torch.no_grad()
def batchnorm_statistics(layout: TargetLayout, net: nn.Module, widths, x: torch.Tensor,
                         batch_size: int = 256) -> dict[str, torch.Tensor]:
    """BatchNorm calibration: the mean and variance every BatchNorm layer of the ``widths`` network
    sees over the samples ``x`` (exact averages over the batches, not a running estimate)."""
    small = narrowed(layout, net, widths)
    norms = [m for m in small.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    small.train()
    for start in range(0, len(x), batch_size):
        small(x[start: start + batch_size])
    return {k: v for k, v in small.state_dict().items() if k.endswith(STATISTICS)}
