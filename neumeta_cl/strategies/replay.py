"""Experience replay: a fixed-size buffer whose samples are appended to every training batch.

Policies:
- ``class_balanced``: every class seen so far gets an equal share of the buffer, filled with a
  uniform random sample of that class over every experience it appeared in (Avalanche's
  ``ClassBalancedBuffer``); shares shrink as classes arrive.
- ``reservoir``: a uniform sample of every training sample seen so far (Vitter's reservoir,
  implemented as "keep the M largest random keys", which is the same distribution).
"""

from __future__ import annotations

import torch

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError
from neumeta_cl.protocol import Plugin
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.optim import OptimConfig

POLICIES = ("class_balanced", "reservoir")


def balanced_quota(n_slots: int, classes: list[int]) -> dict[int, int]:
    """Split ``n_slots`` as evenly as possible over ``classes`` (the first classes get the remainder)."""
    base, extra = divmod(n_slots, len(classes))
    return {c: base + (i < extra) for i, c in enumerate(sorted(classes))}


class ReplayBuffer(Plugin):
    """Updated with each experience's training data once it is learned (``after_training``)."""

    def __init__(self, size: int, policy: str = "class_balanced", seed: int = 0):
        if size <= 0:
            raise ConfigError(f"strategy.buffer_size must be positive, got {size}.")
        if policy not in POLICIES:
            raise ConfigError(f"Unknown replay policy '{policy}'; valid policies are: {', '.join(POLICIES)}.")
        self.size, self.policy = size, policy
        self.generator = torch.Generator().manual_seed(seed)
        self.x = self.y = self.t = None
        self._keys = torch.empty(0)  # reservoir keys of the stored samples
        self._per_class: dict[tuple[int, int], tuple] = {}  # (task, class) -> (x, y, t, keys), keys descending

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def after_training(self, run) -> None:
        self.update(run.experience)

    def state_dict(self) -> dict:
        # Clones: the per-class tensors are slices, and torch.save would write their whole storage.
        # The class-balanced buffer's x, y, t are the concatenation of its classes: not stored twice.
        per_class = [[task, label, *(a.clone() for a in arrays)] for (task, label), arrays in self._per_class.items()]
        own = self.policy == "reservoir"
        return {"x": self.x if own else None, "y": self.y if own else None, "t": self.t if own else None,
                "keys": self._keys, "generator": self.generator.get_state(), "per_class": per_class}

    def load_state_dict(self, state: dict) -> None:
        self._keys = state["keys"]
        self.generator.set_state(state["generator"])
        self._per_class = {(task, label): tuple(arrays) for task, label, *arrays in state["per_class"]}
        if self.policy == "reservoir":
            self.x, self.y, self.t = state["x"], state["y"], state["t"]
        elif self._per_class:
            parts = list(self._per_class.values())
            self.x, self.y, self.t = (torch.cat([p[i] for p in parts]) for i in range(3))

    def update(self, exp: TensorExperience) -> None:
        if self.policy == "reservoir":
            self._update_reservoir(exp)
        else:
            self._update_class_balanced(exp)

    def _update_reservoir(self, exp: TensorExperience) -> None:
        keys = torch.rand(len(exp.y), generator=self.generator)
        if self.y is None:
            x, y, t, all_keys = exp.x, exp.y, exp.t, keys
        else:
            x, y, t = torch.cat([self.x, exp.x]), torch.cat([self.y, exp.y]), torch.cat([self.t, exp.t])
            all_keys = torch.cat([self._keys, keys])
        keep = all_keys.topk(min(self.size, len(all_keys))).indices
        self.x, self.y, self.t, self._keys = x[keep], y[keep], t[keep], all_keys[keep]

    def _update_class_balanced(self, exp: TensorExperience) -> None:
        # Each class keeps a reservoir (random keys, largest kept), so a class that returns in a
        # later experience (domain-incremental streams) is a uniform sample of all its appearances.
        # Classes are keyed by (task, label) so task-incremental label reuse stays separate.
        for task in exp.t.unique().tolist():
            for label in exp.y[exp.t == task].unique().tolist():
                rows = ((exp.t == task) & (exp.y == label)).nonzero().squeeze(1)
                new = (exp.x[rows], exp.y[rows], exp.t[rows], torch.rand(len(rows), generator=self.generator))
                old = self._per_class.get((task, label))
                x, y, t, keys = new if old is None else tuple(torch.cat([o, n]) for o, n in zip(old, new))
                order = keys.argsort(descending=True)[: self.size]
                self._per_class[(task, label)] = (x[order], y[order], t[order], keys[order])
        quota = balanced_quota(self.size, list(self._per_class))
        self._per_class = {k: tuple(a[: quota[k]] for a in v) for k, v in self._per_class.items()}
        parts = list(self._per_class.values())
        self.x, self.y, self.t = (torch.cat([p[i] for p in parts]) for i in range(3))

    def sample(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self), generator=self.generator)[:n]
        return self.x[idx].to(device), self.y[idx].to(device), self.t[idx].to(device)


class Replay(ContinualModule):
    """Each step trains on the current batch plus ``mem_batch_size`` samples drawn from the buffer."""

    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 500,
                 policy: str = "class_balanced", mem_batch_size: int | None = None):
        self.buffer = ReplayBuffer(buffer_size, policy, seed)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.buffer])
        self.mem_batch_size = mem_batch_size or batch_size
        if self.mem_batch_size <= 0:
            raise ConfigError(f"strategy.mem_batch_size must be positive, got {self.mem_batch_size}.")

    def training_batch(self, batch):
        if len(self.buffer) == 0:
            return batch
        x, y, t = batch
        mx, my, mt = self.buffer.sample(self.mem_batch_size, x.device)
        return torch.cat([x, mx]), torch.cat([y, my]), torch.cat([t, mt])
