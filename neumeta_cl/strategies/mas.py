"""Memory Aware Synapses (Aljundi et al. 2018): importance is how much the output moves, no labels.

After experience k, over its training data in mini-batches B (in order, net in train mode):

    Omega_new,i = mean_B | d/dtheta_i  mean_{x in B} ||f(x)||_2^2 |
    Omega <- alpha * Omega + (1 - alpha) * Omega_new          (Omega = Omega_new after the first)

    penalty = mas_lambda * sum_i Omega_i (theta_i - theta*_i)^2,   theta* = theta at the end of k

As Avalanche's ``MASPlugin`` (itself FACIL's): the squared norm (not the paper's norm) of all
outputs of the sample's head, batches of the training batch size, and the ``alpha`` running mix.
"""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.importance import Importance, QuadraticPenalty, merge_shared
from neumeta_cl.strategies.optim import OptimConfig


def output_sensitivity(net: nn.Module, x: torch.Tensor, t: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """mean over mini-batches of |grad of mean_x ||net(x, t)||^2| (parameters no batch reaches: 0)."""
    was_training = net.training
    net.train()  # as Avalanche: the same mode as training (matters for BatchNorm only)
    omega = {n: torch.zeros_like(p) for n, p in net.named_parameters() if p.requires_grad}
    n_batches = 0
    with torch.enable_grad():
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            net.zero_grad(set_to_none=True)
            net(x[sl], t[sl]).pow(2).sum(dim=1).mean().backward()
            for n, p in net.named_parameters():
                if p.grad is not None and n in omega:
                    omega[n] += p.grad.detach().abs()
            n_batches += 1
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    return {n: w / n_batches for n, w in omega.items()}


class OutputSensitivity(Importance):
    def __init__(self, batch_size: int = 128, alpha: float = 0.5):
        self.batch_size, self.alpha = batch_size, alpha

    def estimate(self, net, experience, device):
        return output_sensitivity(net, experience.x.to(device), experience.t.to(device), self.batch_size)

    def merge(self, old, new):
        return merge_shared(old, new, lambda o, n: self.alpha * o + (1 - self.alpha) * n)


class MAS(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, mas_lambda: float = 0.1,
                 alpha: float = 0.5, importance_batch_size: int | None = None):
        if not mas_lambda > 0:
            raise ConfigError(f"strategy.mas_lambda must be positive, got {mas_lambda}; set it with strategy.mas_lambda=<positive number>.")
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"strategy.alpha (MAS's weight of the old importance) must lie in [0, 1), got {alpha}.")
        size = importance_batch_size or batch_size
        piece = QuadraticPenalty(mas_lambda, OutputSensitivity(size, alpha), keep="merge", name="mas_lambda")
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[piece])
