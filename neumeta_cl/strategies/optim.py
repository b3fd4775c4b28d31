"""Optimizers and learning-rate schedules, chosen by name (``train.optimizer``, ``train.lr_schedule``).

The optimizer and its schedule are built afresh for every experience's ``Trainer.fit``: nothing of
them outlives an experience, so a checkpoint needs none of their state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from neumeta_cl.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
LR_SCHEDULES: Registry = Registry("learning-rate schedule")


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)  # momentum is SGD's; Adam keeps its betas


@LR_SCHEDULES.register("constant")
def constant(optimizer, total_steps: int):
    return None


@LR_SCHEDULES.register("cosine")
def cosine(optimizer, total_steps: int):
    """Cosine decay to zero over the experience (Loshchilov & Hutter 2017, without restarts)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total_steps))


@dataclass(frozen=True)
class OptimConfig:
    """``train.optimizer``, ``train.lr``, ... as one value; defaults are configs/config.yaml's."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    lr_decay: float = 1.0  # experience i trains at lr * lr_decay ** i

    def for_experience(self, index: int) -> OptimConfig:
        """The settings of experience ``index``: the rate decayed once per earlier experience, as
        Stable SGD (Mirzadeh et al. 2020) and MC-SGD's research configs (0.8) do."""
        return replace(self, lr=self.lr * self.lr_decay ** max(index, 0))

    def build(self, params) -> torch.optim.Optimizer:
        return OPTIMIZERS.get(self.name)(params, self.lr, self.momentum, self.weight_decay)

    def scheduler(self, optimizer, total_steps: int):
        """The learning-rate schedule over ``total_steps`` steps, or None for a constant rate."""
        return LR_SCHEDULES.get(self.schedule)(optimizer, total_steps)
