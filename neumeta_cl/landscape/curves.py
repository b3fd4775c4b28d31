"""Curves with a trained bend (Garipov et al., NeurIPS 2018): low-loss paths between two minima.

With endpoints A, B and a bend theta (same shape as the weights):

    quadratic Bezier   phi(t) = (1 - t)^2 A + 2 t (1 - t) theta + t^2 B
    polygonal chain    phi(t) = A + 2t (theta - A)               for t <= 1/2
                       phi(t) = theta + (2t - 1)(B - theta)      for t >  1/2

The bend minimises E_{t ~ U(0,1)} L(phi(t)): each step samples one t per mini-batch and takes a
gradient step on theta through phi(t) (``train_bend``). The bend starts at the midpoint (A + B)/2,
where the curve is the straight line. BatchNorm runs on batch statistics while training; every
evaluation at a t recomputes the running statistics there (``Path.net(t, bn_data=...)``).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from neumeta_cl.errors import UserError
from neumeta_cl.landscape.path import Path, lerp

CURVES = ("bezier", "polychain")


class CurvePath(Path):
    """A Bezier curve or a polygonal chain through a bend (default: the midpoint, i.e. the line)."""

    def __init__(self, a: nn.Module, b: nn.Module, kind: str = "bezier", bend: dict[str, torch.Tensor] | None = None):
        if kind not in CURVES:
            raise UserError(f"Unknown curve '{kind}'; valid curves are: {', '.join(CURVES)}.")
        self.name = kind
        super().__init__(a, b)
        self.kind = kind
        self.bend = bend if bend is not None else {n: lerp(v, self.pb[n], 0.5).clone() for n, v in self.pa.items()}
        self.train_info: dict = {}

    def params(self, t: float) -> dict[str, torch.Tensor]:
        t = float(t)
        out = {}
        for n, a in self.pa.items():
            b, c = self.pb[n], self.bend[n]
            if self.kind == "bezier":
                out[n] = (1 - t) ** 2 * a + 2 * t * (1 - t) * c + t ** 2 * b
            elif t <= 0.5:
                out[n] = a + 2 * t * (c - a)
            else:
                out[n] = c + (2 * t - 1) * (b - c)
        return out

    def describe(self) -> dict:
        return {"path": self.kind, **self.train_info}


def path_loss(template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``template``'s function with ``params`` (train mode: BatchNorm on batch statistics)."""
    return F.cross_entropy(functional_call(template, {**buffers, **params}, (x, t)), y)


def sgd_along_path(path, params, data, steps: int, lr: float, momentum: float, batch_size: int,
                   seed: int) -> tuple[list[float], float]:
    """SGD on ``params`` minimising E_{t~U(0,1)} L(path.params(t)): one random t and batch per step.

    Returns the losses and the seconds taken. BatchNorm runs on batch statistics (its running
    statistics live in a scratch copy). Curves and ODE flows train through this one loop.
    """
    x, y, tt = data
    g = torch.Generator().manual_seed(int(seed))
    template = copy.deepcopy(path.a).train()
    buffers = {n: b.clone() for n, b in template.named_buffers()}  # BN running stats here are scratch
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    t0, losses = time.perf_counter(), []
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(len(y), (min(batch_size, len(y)),), generator=g).to(x.device)
            t = float(torch.rand((), generator=g))
            loss = path_loss(template, path.params(t), buffers, x[idx], y[idx], tt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses, time.perf_counter() - t0


def train_bend(path: CurvePath, data, steps: int = 500, lr: float = 0.01, momentum: float = 0.9,
               batch_size: int = 128, seed: int = 0) -> CurvePath:
    """Fit the bend to minimise E_t L(phi(t)) on ``data`` = (x, y, t) by SGD; in place, returns the path."""
    if steps < 0 or batch_size < 1:
        raise UserError(f"train_bend needs steps >= 0 and batch_size >= 1, got {steps} and {batch_size}.")
    bend = {n: v.clone().requires_grad_(True) for n, v in path.bend.items()}
    path.bend = bend
    losses, seconds = sgd_along_path(path, bend.values(), data, steps, lr, momentum, batch_size, seed)
    path.bend = {n: v.detach() for n, v in bend.items()}
    path.train_info = {"steps": steps, "lr": lr, "batch_size": batch_size, "train_seconds": seconds,
                       "loss_first": losses[0] if losses else None, "loss_last_50": float(sum(losses[-50:]) / max(1, len(losses[-50:])))}
    return path


__all__ = ["CURVES", "CurvePath", "train_bend", "path_loss"]
