"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): importance from the training trajectory.

During experience k every step adds to each parameter's path integral

    w_i += g_i * (theta_i(after step) - theta_i(before step))     (g: the gradient the step used)

and at the end of the experience

    Omega_i <- Omega_i + c * (-w_i) / ((theta_i(end) - theta_i(start))^2 + eps)

    penalty = si_lambda / 2 * sum_i min(Omega_i, clip) (theta_i - theta*_i)^2,   theta* = theta(end)

As Avalanche's ``SynapticIntelligencePlugin`` (our reference): c = 1, the gradient is that of the
whole loss (penalty included), BatchNorm parameters are excluded, and Omega is clipped from above
at ``clip`` (0.001 there, hard-coded, from Maltoni & Lomonaco's CWR*/AR1 code; Zenke et al. do
not clip: ``clip: null``). w_i < 0 while the loss falls, hence the sign.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from neumeta_cl.errors import ConfigError
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.importance import Importance, QuadraticPenalty, Tensors
from neumeta_cl.strategies.optim import OptimConfig


def si_parameters(net: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters SI regularises: trainable ones outside BatchNorm layers (as Avalanche)."""
    norm = {f"{m}.{p}" if m else p for m, mod in net.named_modules() if isinstance(mod, _BatchNorm)
            for p, _ in mod.named_parameters(recurse=False)}
    return {n: p for n, p in net.named_parameters() if p.requires_grad and n not in norm}


def si_omega(cumulative: Tensors, path: Tensors, start: Tensors, end: Tensors, eps: float) -> Tensors:
    """Omega_new = Omega + (-w) / ((theta_end - theta_start)^2 + eps), per parameter."""
    return {n: cumulative[n] - path[n] / ((end[n] - start[n]) ** 2 + eps) for n in path}


def si_importance(omega: Tensors, clip: float | None) -> Tensors:
    """The penalty's weights: Omega clipped from above at ``clip`` (None: unclipped)."""
    return {n: w if clip is None else w.clamp(max=clip) for n, w in omega.items()}


class PathIntegral(Importance):
    """SI's Omega. State: the running Omega, this experience's start point and path integral."""

    def __init__(self, eps: float = 1e-7, clip: float | None = 0.001):
        self.eps, self.clip = eps, clip
        self.omega: Tensors = {}  # running sum over experiences (unclipped)
        self.start: Tensors = {}
        self.path: Tensors = {}
        self._before: Tensors = {}

    def begin(self, net):
        params = si_parameters(net)
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.path = {n: torch.zeros_like(p) for n, p in self.start.items()}
        self.omega = {n: self.omega[n].to(p) if n in self.omega and self.omega[n].shape == p.shape
                      else torch.zeros_like(p) for n, p in self.start.items()}

    def before_step(self, net):
        self._before = {n: p.detach().clone() for n, p in si_parameters(net).items()}

    @torch.no_grad()
    def after_step(self, net):
        for n, p in si_parameters(net).items():
            if p.grad is not None and n in self.path:
                self.path[n] += p.grad * (p - self._before[n])
        self._before = {}

    def estimate(self, net, experience, device):
        end = {n: p.detach() for n, p in si_parameters(net).items() if n in self.path}
        self.omega = si_omega(self.omega, {n: self.path[n] for n in end}, self.start, end, self.eps)
        return si_importance(self.omega, self.clip)

    def remap(self, param_map):
        self.omega = param_map.remap_importance(self.omega)
        self.path = param_map.remap_importance(self.path)
        self.start = param_map.remap_anchor(self.start)

    def state_dict(self):
        return {"omega": self.omega, "start": self.start, "path": self.path}

    def load_state_dict(self, state):
        self.omega, self.start, self.path = state["omega"], state["start"], state["path"]


class SI(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, si_lambda: float = 100.0,
                 eps: float = 1e-7, clip: float | None = 0.001):
        if not si_lambda > 0:
            raise ConfigError(f"strategy.si_lambda must be positive, got {si_lambda}; set it with strategy.si_lambda=<positive number>.")
        if not eps > 0:
            raise ConfigError(f"strategy.eps must be positive, got {eps}.")
        if clip is not None and not clip > 0:
            raise ConfigError(f"strategy.clip must be positive or null (no clip), got {clip}.")
        # Avalanche's penalty is lambda / 2 * sum Omega (theta - theta*)^2.
        piece = QuadraticPenalty(si_lambda / 2, PathIntegral(eps, clip), keep="merge", name="si_lambda")
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[piece])
