"""ER with asymmetric cross-entropy (ER-ACE, Caccia et al. 2022).

The current mini-batch's cross-entropy only competes among the classes present in that
mini-batch; the memory's samples use the ordinary cross-entropy over all classes:

    L = 1/2 * [ CE(z_mem, y_mem) + CE(z_cur[:, C], y_cur) ],   C = classes in the current mini-batch

so learning new classes does not push the logits of old classes down (the abrupt representation
change at a class boundary). As Avalanche's ``ER_ACE`` (offline version): the memory is
class-balanced and takes the experience's samples *before* it trains, and the memory term starts
with the second experience (plain cross-entropy on the first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.replay import check_mem_batch_size


def asymmetric_cross_entropy(z_cur: torch.Tensor, y_cur: torch.Tensor, z_mem: torch.Tensor,
                             y_mem: torch.Tensor) -> torch.Tensor:
    """ER-ACE's loss: (CE(z_mem, y_mem) + CE restricted to the current batch's classes) / 2."""
    present = y_cur.unique()  # sorted
    local = torch.searchsorted(present, y_cur)  # y_cur's position among the present classes
    return (F.cross_entropy(z_mem, y_mem) + F.cross_entropy(z_cur[:, present], local)) / 2


class ERACE(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 policy: str = "class_balanced", mem_batch_size: int | None = None):
        self.buffer = ReplayBuffer(buffer_size, policy, seed, when="before_training")
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer])
        self.mem_batch_size = mem_batch_size or batch_size
        check_mem_batch_size(self.mem_batch_size)

    def replaying(self) -> bool:
        return self.experience_index > 0 and len(self.buffer) >= self.mem_batch_size

    def training_batch(self, batch):
        if not self.replaying():
            return batch
        x, y, t = batch
        mx, my, mt = self.buffer.sample(self.mem_batch_size, x.device)
        return torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt])

    def criterion(self, logits, y, n_current):
        if len(y) == n_current:
            return F.cross_entropy(logits, y)
        return asymmetric_cross_entropy(logits[:n_current], y[:n_current], logits[n_current:], y[n_current:])
