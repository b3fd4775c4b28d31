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
from neumeta_cl.protocol import Plugin
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
    params = dict(net.named_parameters())
    total = torch.zeros((), device=next(net.parameters()).device)
    for fisher, star in anchors:
        for name, f in fisher.items():
            p = params.get(name)
            if p is not None and p.shape == f.shape:
                total = total + (f * (p - star[name]) ** 2).sum()
    return total


class EWCPenalty(Plugin):
    def __init__(self, ewc_lambda: float, mode: str = "separate", decay: float = 1.0, fisher_batch_size: int = 128):
        if mode not in ("separate", "online"):
            raise ConfigError(f"Unknown EWC mode '{mode}'; valid modes are: online, separate.")
        if ewc_lambda < 0:
            raise ConfigError(f"strategy.ewc_lambda must be >= 0, got {ewc_lambda}.")
        if not 0.0 <= decay <= 1.0:
            raise ConfigError(f"strategy.decay must lie in [0, 1], got {decay}.")
        self.ewc_lambda, self.mode, self.decay, self.fisher_batch_size = ewc_lambda, mode, decay, fisher_batch_size
        self.anchors: list[tuple[dict, dict]] = []  # (fisher, theta*) per anchor

    def loss(self, strategy, x, t, logits):
        if not self.anchors or self.ewc_lambda == 0:
            return 0.0
        device = next(strategy.net.parameters()).device
        if next(iter(self.anchors[0][0].values())).device != device:  # anchors restored from a checkpoint
            self.anchors = [({k: v.to(device) for k, v in f.items()}, {k: v.to(device) for k, v in s.items()})
                            for f, s in self.anchors]
        return self.ewc_lambda * ewc_penalty(strategy.net, self.anchors)

    def remap(self, param_map) -> None:
        """Follow a morph: copied units keep their (rescaled) importance, new units start free."""
        self.anchors = [(param_map.remap_importance(f), param_map.remap_anchor(s)) for f, s in self.anchors]

    def state_dict(self) -> dict:
        return {"anchors": [{"fisher": f, "star": s} for f, s in self.anchors]}

    def load_state_dict(self, state: dict) -> None:
        self.anchors = [(a["fisher"], a["star"]) for a in state["anchors"]]

    def after_training(self, run) -> None:
        net, experience, device = run.strategy.net, run.experience, run.device
        fisher = diagonal_fisher(
            net, experience.x.to(device), experience.y.to(device), experience.t.to(device), self.fisher_batch_size
        )
        star = {name: p.detach().clone() for name, p in net.named_parameters()}
        if self.mode == "online" and self.anchors:
            old_fisher, _ = self.anchors[0]
            for name, f in fisher.items():
                if name in old_fisher and old_fisher[name].shape == f.shape:
                    f += self.decay * old_fisher[name]
            self.anchors = [(fisher, star)]
        else:
            self.anchors.append((fisher, star))


class EWC(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, ewc_lambda: float = 100.0,
                 mode: str = "separate", decay: float = 1.0, fisher_batch_size: int | None = None):
        piece = EWCPenalty(ewc_lambda, mode, decay, fisher_batch_size or batch_size)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[piece])
