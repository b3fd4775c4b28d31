"""Learning without Forgetting (Li & Hoiem 2016): distil the previous model's outputs on new data.

penalty = alpha * sum over old tasks KL(softmax(z_old / T) || softmax(z / T)) on the units of the
classes seen before (single head) or on each previous task's head (multi-head), with
``batchmean`` reduction and no T^2 factor, as in Avalanche's ``LearningWithoutForgetting``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from neumeta_cl.errors import ConfigError
from neumeta_cl.nets.heads import MultiHead
from neumeta_cl.nets.structure import load_net, net_state
from neumeta_cl.protocol import Plugin
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.optim import OptimConfig


def distillation_loss(logits: torch.Tensor, old_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = F.log_softmax(logits / temperature, dim=1)
    q = F.softmax(old_logits / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


class Distillation(Plugin):
    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        if alpha < 0 or temperature <= 0:
            raise ConfigError(f"LwF needs alpha >= 0 and temperature > 0, got alpha={alpha}, temperature={temperature}.")
        self.alpha, self.temperature = alpha, temperature
        self.teacher = None
        self.old_classes: dict[int, list[int]] = {}  # task -> classes the teacher was trained on

    def after_training(self, run) -> None:
        experience = run.experience
        self.teacher = copy.deepcopy(run.strategy.net).eval().requires_grad_(False)
        for task in experience.t.unique().tolist():
            seen = set(self.old_classes.get(task, [])) | set(experience.y[experience.t == task].unique().tolist())
            self.old_classes[task] = sorted(seen)

    def state_dict(self) -> dict:
        return {"teacher": None if self.teacher is None else net_state(self.teacher), "old_classes": self.old_classes}

    def load_state_dict(self, state: dict) -> None:
        self.teacher = None if state["teacher"] is None else load_net(state["teacher"]).eval().requires_grad_(False)
        self.old_classes = {int(k): list(v) for k, v in state["old_classes"].items()}

    def loss(self, strategy, x, t, logits):
        if self.teacher is None or self.alpha == 0:
            return 0.0
        net = strategy.net
        if next(self.teacher.parameters()).device != x.device:  # a teacher restored from a checkpoint
            self.teacher.to(x.device)
        with torch.no_grad():
            teacher_h = self.teacher.features(x)
        if isinstance(net.head, MultiHead):
            h = net.features(x)
            loss = 0.0
            for task, classes in self.old_classes.items():
                z = net.head.forward_task(h, task)[:, classes]
                z_old = self.teacher.head.forward_task(teacher_h, task)[:, classes]
                loss = loss + distillation_loss(z, z_old, self.temperature)
        else:
            classes = self.old_classes[0]
            loss = distillation_loss(logits[:, classes], self.teacher.head(teacher_h)[:, classes], self.temperature)
        return self.alpha * loss


class LwF(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, alpha: float = 1.0,
                 temperature: float = 2.0):
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[Distillation(alpha, temperature)])
