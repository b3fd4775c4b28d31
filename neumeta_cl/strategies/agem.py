"""Averaged GEM (Chaudhry et al. 2019): project the gradient so the memory's loss does not rise.

Each step, with g the gradient of the current mini-batch's loss and g_ref the gradient of the
loss on ``sample_size`` samples drawn from the episodic memory (same weights):

    g~ = g - (g . g_ref) / (g_ref . g_ref) * g_ref      if g . g_ref < 0,   else g~ = g

The memory is the shared buffer (``strategies.buffer``), experience-balanced by default as
A-GEM's memory of patterns per experience, updated after each experience. g_ref is recomputed
every step from buffered samples and never stored, so it follows any morph of the net by
construction (the buffer holds inputs, not parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neumeta_cl.errors import ConfigError
from neumeta_cl.protocol import Plugin
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer
from neumeta_cl.strategies.optim import OptimConfig


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of the flat gradient ``g`` against the flat reference gradient ``g_ref``."""
    dot = torch.dot(g, g_ref)
    if dot < 0:
        return g - (dot / torch.dot(g_ref, g_ref)) * g_ref
    return g


class GradientProjection(Plugin):
    """Replaces the gradients in ``p.grad`` by their A-GEM projection (``after_backward``)."""

    def __init__(self, buffer: ReplayBuffer, sample_size: int):
        self.buffer, self.sample_size = buffer, sample_size
        self.projected = 0  # steps whose gradient was projected, this experience
        self.steps = 0

    def before_experience(self, run) -> None:
        self.projected = self.steps = 0

    def after_backward(self, strategy) -> None:
        if len(self.buffer) == 0:
            return
        net = strategy.net
        params = [p for p in net.parameters() if p.requires_grad]
        x, y, t = self.buffer.sample(self.sample_size, params[0].device)
        with torch.enable_grad():
            ref = torch.autograd.grad(F.cross_entropy(net(x, t), y), params, allow_unused=True)
        flat = lambda gs: torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)  # noqa: E731
                                     for p, g in zip(params, gs)])
        g = flat([p.grad for p in params])
        g_new = agem_project(g, flat(ref))
        self.steps += 1
        if g_new is g:
            return
        self.projected += 1
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(g_new[offset: offset + n].view_as(p))
            offset += n


class AGEM(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 sample_size: int = 64, policy: str = "experience_balanced"):
        self.buffer = ReplayBuffer(buffer_size, policy, seed)
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size <= 0:
            raise ConfigError(f"strategy.sample_size must be a positive integer, got {sample_size!r}.")
        if sample_size > buffer_size:
            raise ConfigError(f"strategy.sample_size ({sample_size}) is larger than strategy.buffer_size ({buffer_size}): "
                              f"A-GEM draws its reference batch from the memory; lower sample_size or raise buffer_size.")
        self.projection = GradientProjection(self.buffer, sample_size)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer, self.projection])

    def report(self):
        from neumeta_cl.protocol import StrategyReport

        share = self.projection.projected / self.projection.steps if self.projection.steps else 0.0
        return StrategyReport(scalars={"projected_share": share})
