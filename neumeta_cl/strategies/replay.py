"""Experience replay: buffered samples are appended to every training batch.

The buffer and its policies (class-balanced, reservoir, ...) are ``strategies.buffer``'s,
shared with A-GEM, ER-ACE, DER and GDumb. Replay trains on cross-entropy over the current batch
plus ``mem_batch_size`` buffered samples, as Avalanche's ``ReplayPlugin``.
"""

from __future__ import annotations

import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer, balanced_quota  # noqa: F401  (balanced_quota: tests)
from neumeta_cl.strategies.optim import OptimConfig


def check_mem_batch_size(mem_batch_size: int) -> None:
    if mem_batch_size <= 0:
        raise ConfigError(f"strategy.mem_batch_size must be positive, got {mem_batch_size}.")


class Replay(ContinualModule):
    """Each step trains on the current batch plus ``mem_batch_size`` samples drawn from the buffer."""

    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 policy: str = "class_balanced", mem_batch_size: int | None = None):
        self.buffer = ReplayBuffer(buffer_size, policy, seed)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer])
        self.mem_batch_size = mem_batch_size or batch_size
        check_mem_batch_size(self.mem_batch_size)

    def training_batch(self, batch):
        if len(self.buffer) == 0:
            return batch
        x, y, t = batch
        mx, my, mt = self.buffer.sample(self.mem_batch_size, x.device)
        return torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt])
