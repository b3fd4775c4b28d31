"""The episodic memory shared by replay, A-GEM, ER-ACE, DER and GDumb: one buffer, pluggable policies.

A buffer holds rows of named fields: ``x``, ``y``, ``t``, ``exp`` (the experience a row came
from), ``key`` (its random key) and any extra fields a strategy stores with a sample (DER's logits
and the mask of the columns they cover). ``update(experience, extra)`` offers a whole experience;
the policy decides which rows stay:

- ``class_balanced``: every class (task, label) seen so far gets an equal share of the buffer,
  filled with a uniform random sample of that class over every experience it appeared in
  (Avalanche's ``ClassBalancedBuffer``); shares shrink as classes arrive.
- ``experience_balanced``: the same with experiences as the groups (Avalanche's
  ``ExperienceBalancedBuffer``; A-GEM's memory of patterns per experience).
- ``reservoir``: a uniform sample of every training sample seen so far (Vitter's reservoir).
- ``greedy_class_balanced``: GDumb's sampler (Prabhu et al. 2020): the experience's samples
  arrive one by one in a random order; a sample is stored while there is room, otherwise it
  replaces a random stored sample of the currently largest class, if its own class is smaller.

The first three are one rule: each row draws a uniform key when it arrives, and each group keeps
its ``quota`` rows with the largest keys ("keep the M largest random keys" is Vitter's reservoir).
"""

from __future__ import annotations

import torch

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError, DataError
from neumeta_cl.protocol import Plugin

POLICIES = ("class_balanced", "experience_balanced", "greedy_class_balanced", "reservoir")
BASE_FIELDS = ("x", "y", "t", "exp", "key")


def balanced_quota(n_slots: int, groups: list) -> dict:
    """Split ``n_slots`` as evenly as possible over ``groups`` (the first in sorted order get the remainder)."""
    base, extra = divmod(n_slots, len(groups))
    return {g: base + (i < extra) for i, g in enumerate(sorted(groups))}


def keep_largest_keys(groups: list, order: list, keys: torch.Tensor, size: int) -> torch.Tensor:
    """Rows to keep: per group (groups in ``order``) its ``balanced_quota`` of rows with the largest
    keys, largest first. ``groups[i]`` is row i's group; a single group is a reservoir."""
    members: dict = {g: [] for g in order}
    for i, g in enumerate(groups):
        members[g].append(i)
    quota = balanced_quota(size, order)
    kept = []
    for g in order:
        rows = torch.tensor(members[g], dtype=torch.long)
        kept.append(rows[keys[rows].argsort(descending=True)[: quota[g]]])
    return torch.cat(kept)


def greedy_class_balanced(stored: list, arriving: list, size: int, generator: torch.Generator) -> list[int]:
    """GDumb's sampler over class ids: ``stored`` then ``arriving`` are the rows' classes; returns the
    kept rows (indices into stored + arriving), in storage order."""
    labels = list(stored)
    by_class: dict = {}
    for slot, c in enumerate(labels):
        by_class.setdefault(c, []).append(slot)
    rows = list(range(len(stored)))  # slot -> row
    for j, c in enumerate(arriving):
        row = len(stored) + j
        if len(rows) < size:
            by_class.setdefault(c, []).append(len(rows))
            rows.append(row)
            labels.append(c)
            continue
        largest = max(by_class, key=lambda k: len(by_class[k]))  # ties: the class stored first
        if len(by_class.get(c, [])) >= len(by_class[largest]):
            continue  # its class is already (one of) the largest: not stored
        pick = int(torch.randint(len(by_class[largest]), (1,), generator=generator))
        slot = by_class[largest].pop(pick)
        rows[slot], labels[slot] = row, c
        by_class.setdefault(c, []).append(slot)
    return rows


class ReplayBuffer(Plugin):
    """A fixed-size memory. As a plugin it takes each experience's training data ``when`` the
    strategy wants it: ``after_training`` (replay, A-GEM, DER) or ``before_training`` (ER-ACE);
    ``when=None``: the strategy calls ``update`` itself (GDumb, DER with its logits)."""

    def __init__(self, size: int, policy: str = "class_balanced", seed: int = 0, when: str | None = "after_training"):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"strategy.buffer_size must be positive, got {size}; set it with strategy.buffer_size=<positive integer>.")
        if policy not in POLICIES:
            raise ConfigError(f"Unknown replay policy '{policy}'; valid policies are: {', '.join(POLICIES)}.")
        self.size, self.policy, self.when = size, policy, when
        self.generator = torch.Generator().manual_seed(seed)
        self.data: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0 if not self.data else len(self.data["y"])

    def __getattr__(self, name):  # buffer.x, buffer.y, buffer.logits, ...
        data = self.__dict__.get("data")
        if data is not None and name in ("x", "y", "t") + tuple(data):
            return data.get(name)
        raise AttributeError(name)

    # -- events ----------------------------------------------------------------------------------
    def before_run(self, run) -> None:
        if self.policy in ("class_balanced", "greedy_class_balanced"):  # refuse before training anything
            for exp in run.stream.train:
                check_class_labels(exp)

    def before_experience(self, run) -> None:
        if self.when == "before_training":
            self.update(run.experience)

    def after_training(self, run) -> None:
        if self.when == "after_training":
            self.update(run.experience)

    def state_dict(self) -> dict:
        return {"data": dict(self.data), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.data = dict(state["data"])
        self.generator.set_state(state["generator"])

    # -- the policy ------------------------------------------------------------------------------
    def update(self, exp: TensorExperience, extra: dict[str, torch.Tensor] | None = None) -> None:
        """Offer every sample of ``exp`` (with ``extra`` fields, one row per sample) to the policy."""
        if self.policy in ("class_balanced", "greedy_class_balanced"):
            check_class_labels(exp)
        new = {"x": exp.x, "y": exp.y, "t": exp.t, "exp": torch.full_like(exp.y, exp.index),
               "key": self._keys(exp), **(extra or {})}
        if self.data and set(self.data) != set(new):
            raise ValueError(f"buffer rows hold {sorted(self.data)}, the new ones {sorted(new)}")
        both = {k: torch.cat([self.data[k], v.to(self.data[k].device)]) if self.data else v for k, v in new.items()}
        if self.policy == "greedy_class_balanced":
            order = torch.randperm(len(exp.y), generator=self.generator)
            both = {k: torch.cat([v[: len(self)], v[len(self):][order]]) for k, v in both.items()}
            keep = torch.tensor(greedy_class_balanced(self._classes(both, 0, len(self)),
                                                      self._classes(both, len(self), None), self.size, self.generator),
                                dtype=torch.long)
        else:
            keep = keep_largest_keys(*self._groups(both), both["key"], self.size)
        self.data = {k: v[keep] for k, v in both.items()}

    def _keys(self, exp: TensorExperience) -> torch.Tensor:
        if self.policy != "class_balanced":
            return torch.rand(len(exp.y), generator=self.generator)
        # One draw per class, in (task, label) order: the order this buffer has always drawn in.
        keys = torch.empty(len(exp.y))
        for task in exp.t.unique().tolist():
            for label in exp.y[exp.t == task].unique().tolist():
                rows = ((exp.t == task) & (exp.y == label)).nonzero().squeeze(1)
                keys[rows] = torch.rand(len(rows), generator=self.generator)
        return keys

    def _groups(self, rows: dict) -> tuple[list, list]:
        """Each row's group, and the order groups are stored in: stored groups first, new ones sorted
        (the order this buffer has always kept, so runs stay comparable across versions)."""
        if self.policy == "reservoir":
            return [0] * len(rows["y"]), [0]
        if self.policy == "experience_balanced":
            groups = rows["exp"].tolist()
        else:
            groups = self._classes(rows, 0, None)
        stored = list(dict.fromkeys(groups[: len(self)]))
        return groups, stored + sorted(set(groups[len(self):]) - set(stored))

    @staticmethod
    def _classes(rows: dict, start: int, stop: int | None) -> list:
        return list(zip(rows["t"][start:stop].tolist(), rows["y"][start:stop].tolist()))

    def sample(self, n: int, device, fields: tuple[str, ...] = ("x", "y", "t")) -> tuple[torch.Tensor, ...]:
        """``n`` rows drawn uniformly without replacement (all of them if fewer are stored)."""
        idx = torch.randperm(len(self), generator=self.generator)[:n]
        return tuple(self.data[f][idx].to(device) for f in fields)

    def as_experience(self, index: int) -> TensorExperience:
        """The whole memory as an experience to train on (GDumb)."""
        y = self.data["y"]
        return TensorExperience(index=index, x=self.data["x"], y=y, t=self.data["t"],
                                task_label=int(self.data["t"][0]), classes=sorted(set(y.tolist())))


def check_class_labels(exp: TensorExperience) -> None:
    """A class-balanced memory needs integer class labels."""
    y = exp.y
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1 or (len(y) and int(y.min()) < 0):
        raise DataError(f"A class-balanced memory (policy class_balanced or greedy_class_balanced, GDumb) needs "
                        f"integer class labels, but experience {exp.index} has {y.dtype} targets of shape "
                        f"{tuple(y.shape)}; use policy=reservoir, or a stream with class labels.")
