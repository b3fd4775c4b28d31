"""Mode-connectivity SGD (Mirzadeh et al., "Linear Mode Connectivity in Multitask and Continual
Learning", ICLR 2021): the continual solution is a point joined by low-loss lines to both the
previous continual solution w_prev and the new task's minimum w_curr:

    w_bar = argmin_w  1/K sum_{k} [ L_old(w_prev + a_k (w - w_prev)) + L_new(w_curr + a_k (w - w_curr)) ]

with a_k evenly spaced in [0, 1] (K line samples), L_old the loss on the replay memory of the
earlier experiences, L_new the loss on the current experience's data (as the research code:
the multitask memory on the line to w_prev, the current task on the line to w_curr), and w
started at w_prev + init_position (w_curr - w_prev); SGD with momentum, ``epochs`` passes over
the memory in mini-batches, each step pairing a memory batch with a random batch of the current
data (a batch as large as the memory gives one full-batch step per epoch).

``lowest_point`` is the other way to use a path: evaluate the memory loss at evenly spaced t on a
line, curve or flow between w_prev and w_curr and take the t with the lowest loss.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from neumeta_cl.landscape.barrier import loss_and_accuracy
from neumeta_cl.landscape.curves import path_loss
from neumeta_cl.landscape.path import Path


def mcsgd_point(prev: nn.Module, curr: nn.Module, memory, current, init_position: float = 0.1, line_samples: int = 10,
                lr: float = 0.05, momentum: float = 0.8, epochs: int = 1, batch_size: int = 64,
                seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """The MC-SGD point's parameters, and what the optimisation did. ``memory`` (earlier experiences)
    and ``current`` (this experience) are (x, y, t)."""
    x, y, tt = memory
    cx, cy, ct = current
    w_prev = {n: p.detach() for n, p in prev.named_parameters()}
    w_curr = {n: p.detach() for n, p in curr.named_parameters()}
    w = {n: (v + init_position * (w_curr[n] - v)).clone().requires_grad_(True) for n, v in w_prev.items()}
    template = copy.deepcopy(curr).train()
    buffers = {n: b.clone() for n, b in template.named_buffers()}
    alphas = torch.linspace(0.0, 1.0, line_samples).tolist()
    opt = torch.optim.SGD(w.values(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(int(seed))
    steps, losses = 0, []
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=g).to(x.device)
            for s in range(0, len(y), batch_size):
                idx = order[s:s + batch_size]
                xb, yb, tb = x[idx], y[idx], tt[idx]
                cidx = torch.randint(len(cy), (len(idx),), generator=g).to(x.device)
                cxb, cyb, ctb = cx[cidx], cy[cidx], ct[cidx]
                loss = 0.0
                for a in alphas:
                    on_prev = {n: w_prev[n] + a * (w[n] - w_prev[n]) for n in w}
                    on_curr = {n: w_curr[n] + a * (w[n] - w_curr[n]) for n in w}
                    loss = loss + path_loss(template, on_prev, buffers, xb, yb, tb) + path_loss(template, on_curr, buffers, cxb, cyb, ctb)
                loss = loss / len(alphas)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                losses.append(float(loss.detach()))
    info = {"steps": steps, "line_loss_first": losses[0] if losses else None, "line_loss_last": losses[-1] if losses else None}
    return {n: v.detach() for n, v in w.items()}, info


def lowest_point(path: Path, memory, grid: int = 25, bn_data=None) -> tuple[float, nn.Module, list[float]]:
    """(t*, net at t*, memory loss at every grid t): the point of ``path`` with the lowest loss on ``memory``."""
    ts = [float(v) for v in np.linspace(0.0, 1.0, grid)]
    losses, best = [], (float("inf"), None, None)
    for t in ts:
        net = path.net(t, bn_data)
        loss = loss_and_accuracy(net, *memory)[0]
        losses.append(loss)
        if loss < best[0]:
            best = (loss, t, net)
    return best[1], best[2], losses


__all__ = ["mcsgd_point", "lowest_point"]
