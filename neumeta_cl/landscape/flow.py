"""A continuous transformation flow (neural ODE, Chen et al. 2018) from net A to net B.

The weights move along the solution of an ODE whose vector field is trained. To make the
trajectory start at A and end at B exactly, whatever the field, the weights are written as the
straight line plus a deviation that vanishes at both ends, and the deviation's state z follows the
learned ODE:

    theta(t) = (1 - t) A + t B + t (1 - t) z(t),      dz/dt = g_phi(z, t),   z(0) = z_0
    g_phi(z, t) = a_phi(t) * (M - z)                  a_phi(t) = softplus(MLP(t)), one rate per tensor

so d theta / dt = (B - A) + (1 - 2t) z + t (1 - t) g_phi(z, t) =: v(theta, t), a vector field in
(theta, t) (z = (theta - line) / (t (1 - t)) inside the interval). The deviation relaxes towards a
learned target M at learned, time-varying rates per weight tensor; phi = (MLP, M, z_0) minimises
E_{t ~ U(0,1)} L(theta(t)), integrating the ODE (torchdiffeq, fixed-step RK4) to each sampled t and
back-propagating through the solver. A quadratic Bezier curve with bend C is the special case
z = 2 (C - (A + B) / 2) constant, so starting from a trained curve (``from_curve``) the flow begins
exactly on it and training can only move it to lower loss on the training data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint

from neumeta_cl.errors import UserError
from neumeta_cl.landscape.curves import CurvePath, sgd_along_path
from neumeta_cl.landscape.path import Path


class VectorField(nn.Module):
    """g_phi(z, t) = softplus(MLP(t))[tensor of each entry] * (M - z)."""

    def __init__(self, n_tensors: int, segments: torch.Tensor, target: torch.Tensor, hidden: int = 16):
        super().__init__()
        self.rate = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, n_tensors))
        nn.init.zeros_(self.rate[2].weight)
        nn.init.constant_(self.rate[2].bias, -3.0)  # rates start near 0.05: the flow starts on its initial curve
        self.register_buffer("segments", segments)
        self.target = nn.Parameter(target.clone())
        self.evaluations = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        rate = F.softplus(self.rate(t.reshape(1, 1).to(z))).squeeze(0)
        return rate[self.segments] * (self.target - z)


class FlowPath(Path):
    """theta(t) from the learned ODE above; ``step_size`` is the RK4 step."""

    name = "ode"

    def __init__(self, a: nn.Module, b: nn.Module, z0: torch.Tensor | None = None, step_size: float = 0.05,
                 hidden: int = 16):
        super().__init__(a, b)
        self.names = list(self.pa)
        self.shapes = [self.pa[n].shape for n in self.names]
        sizes = [self.pa[n].numel() for n in self.names]
        self.line_a = torch.cat([self.pa[n].flatten() for n in self.names])
        self.line_b = torch.cat([self.pb[n].flatten() for n in self.names])
        segments = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(self.line_a.device)
        z0 = torch.zeros_like(self.line_a) if z0 is None else z0
        self.field = VectorField(len(sizes), segments, z0, hidden).to(self.line_a.device)
        self.z0 = nn.Parameter(z0.clone())
        self.step_size = step_size
        self.train_info: dict = {}

    @classmethod
    def from_curve(cls, curve: CurvePath, **kw) -> "FlowPath":
        """Start on a quadratic Bezier curve: z_0 = M = 2 (bend - midpoint)."""
        if curve.kind != "bezier":
            raise UserError("An ODE flow starts from a Bezier curve (its deviation is t(1-t) times a vector); "
                            f"got a {curve.kind}.")
        names = list(curve.pa)
        z = torch.cat([(2 * (curve.bend[n] - (curve.pa[n] + curve.pb[n]) / 2)).flatten() for n in names])
        return cls(curve.a, curve.b, z0=z, **kw)

    def trainable(self) -> list[torch.Tensor]:
        return [self.z0, *self.field.parameters()]

    def z(self, t: float) -> torch.Tensor:
        if t <= 0:
            return self.z0
        times = torch.tensor([0.0, float(t)], device=self.z0.device)
        return odeint(self.field, self.z0, times, method="rk4", options={"step_size": self.step_size})[-1]

    def flat(self, t: float) -> torch.Tensor:
        t = float(t)
        return (1 - t) * self.line_a + t * self.line_b + t * (1 - t) * self.z(t)

    def params(self, t: float) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        theta = self.flat(t)
        for n, shape in zip(self.names, self.shapes):
            k = shape.numel()
            out[n] = theta[start:start + k].view(shape)
            start += k
        return out

    def net(self, t: float, bn_data=None) -> nn.Module:
        with torch.no_grad():
            return super().net(t, bn_data)

    def describe(self) -> dict:
        return {"path": "ode", "step_size": self.step_size, **self.train_info}


def train_flow(path: FlowPath, data, steps: int = 300, lr: float = 0.01, momentum: float = 0.9, batch_size: int = 128,
               seed: int = 0) -> FlowPath:
    """Fit the vector field (and z_0) to minimise E_t L(theta(t)) on ``data`` = (x, y, t); in place."""
    if steps < 0 or batch_size < 1:
        raise UserError(f"train_flow needs steps >= 0 and batch_size >= 1, got {steps} and {batch_size}.")
    path.field.evaluations = 0
    losses, seconds = sgd_along_path(path, path.trainable(), data, steps, lr, momentum, batch_size, seed)
    path.train_info = {"steps": steps, "lr": lr, "batch_size": batch_size, "train_seconds": seconds,
                       "field_evaluations": path.field.evaluations,
                       "loss_last_50": float(sum(losses[-50:]) / max(1, len(losses[-50:])))}
    return path


__all__ = ["VectorField", "FlowPath", "train_flow"]
