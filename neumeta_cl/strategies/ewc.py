"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), separate and online (Schwarz et al. 2018).

penalty = lambda * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2

Scaling follows Avalanche's ``EWCPlugin`` (no 1/2; the paper's lambda is twice ours), and so does
the importance: the squared gradient of the mean mini-batch loss, averaged over the experience's
mini-batches, with the network in eval mode. ``separate`` keeps one (F, theta*) pair per past
experience; ``online`` keeps one pair, F <- decay * F + F_new and theta* <- theta.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.strategies.importance import Importance, QuadraticPenalty, merge_shared, quadratic_penalty
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.optim import OptimConfig


def diagonal_fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of the squared gradient of the mini-batch cross-entropy."""
    was_training = net.training
    net.eval()
    fisher = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    n_batches = 0
    with torch.enable_grad():
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[sl], t[sl]), y[sl]).backward()
            for name, p in net.named_parameters():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2
            n_batches += 1
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    return {name: f / n_batches for name, f in fisher.items()}


def ewc_penalty(net: nn.Module, anchors: list[tuple[dict, dict]]) -> torch.Tensor:
    """sum over anchors (F, theta*) of sum_i F_i (theta_i - theta*_i)^2; parameters added since are free."""
    return quadratic_penalty(net, anchors)


class FisherImportance(Importance):
    """EWC's Omega: the diagonal Fisher of the experience just learned (``diagonal_fisher``)."""

    def __init__(self, batch_size: int = 128, decay: float = 1.0):
        self.batch_size, self.decay = batch_size, decay

    def estimate(self, net, experience, device):
        return diagonal_fisher(net, experience.x.to(device), experience.y.to(device), experience.t.to(device),
                               self.batch_size)

    def merge(self, old, new):
        """Online EWC: F <- decay * F_old + F_new."""
        return merge_shared(old, new, lambda o, n: self.decay * o + n)


class EWCPenalty(QuadraticPenalty):
    def __init__(self, ewc_lambda: float, mode: str = "separate", decay: float = 1.0, fisher_batch_size: int = 128):
        if mode not in ("separate", "online"):
            raise ConfigError(f"Unknown EWC mode '{mode}'; valid modes are: online, separate.")
        if ewc_lambda < 0:
            raise ConfigError(f"strategy.ewc_lambda must be >= 0, got {ewc_lambda}.")
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"strategy.decay must lie in [0, 1], got {decay}.")
        super().__init__(ewc_lambda, FisherImportance(fisher_batch_size, decay),
                         keep="merge" if mode == "online" else "separate", name="ewc_lambda")
        self.ewc_lambda, self.mode, self.decay, self.fisher_batch_size = ewc_lambda, mode, decay, fisher_batch_size


class EWC(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, ewc_lambda: float = 100.0,
                 mode: str = "separate", decay: float = 1.0, fisher_batch_size: int | None = None):
        piece = EWCPenalty(ewc_lambda, mode, decay, fisher_batch_size or batch_size)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[piece])
