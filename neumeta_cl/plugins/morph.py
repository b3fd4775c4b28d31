"""Apply morph operators between experiences and record what each one cost.

A schedule in config, e.g. ``morph.schedule: [{at: 2, op: widen, layer: 0, to: 384}]``, applies
``widen(net, layer=0, to=384)`` right before experience 2 trains. For every morph the record holds
the operator's MorphReport (time, parameters and FLOPs before/after, preservation error), the
accuracy on the experiences seen so far right before and right after, and, when
``every_n_steps`` > 0, the optimizer steps until that accuracy recovers and the lowest accuracy
reached on the earlier experiences while the network trains after the morph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neumeta_cl.errors import ConfigError
from neumeta_cl.morph.report import Probe
from neumeta_cl.protocol import Plugin, RunSettings
from neumeta_cl.runner.evaluation import accuracy_row
from neumeta_cl.runner.probes import StabilityProbe


@dataclass
class MorphStep:
    at: int  # experience index the morph happens before
    op: str
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, entry: dict) -> "MorphStep":
        entry = dict(entry)
        if "at" not in entry or "op" not in entry:
            raise ConfigError(f"Each morph.schedule entry needs `at` (experience) and `op`, got {entry}.")
        return cls(at=int(entry.pop("at")), op=str(entry.pop("op")), kwargs=entry)


def probe_batch(run, n: int, train_mode: bool = False) -> Probe:
    """Inputs (and task labels) the preservation error is measured on: the experience about to train."""
    exp = run.stream.train[run.index]
    return Probe(exp.x[:n].to(run.device), exp.t[:n].to(run.device), train_mode)


class GrowPolicy:
    """Add capacity for every new experience: widen each hidden layer by ``grow_by`` units.

    ``init="zero"`` (Net2Net with zero outgoing weights) keeps the function, so old experiences
    are untouched at the moment of growth; the new units start free of any anchor (EWC gives
    them zero importance), the old ones stay anchored. A light form of DEN / progressive nets.
    """

    def __init__(self, grow_by: int = 32, layers: list[int] | None = None, init: str = "zero", seed: int = 0,
                 seed_offset: int = 1000):
        if grow_by <= 0:
            raise ConfigError(f"The grow policy needs grow_by > 0, got {grow_by}.")
        self.grow_by, self.layers, self.init, self.seed, self.seed_offset = grow_by, layers, init, seed, seed_offset

    def plan(self, run) -> list[MorphStep]:
        index = run.index
        if index == 0:
            return []
        widths = run.net.widths
        layers = self.layers if self.layers is not None else range(len(widths))
        return [MorphStep(index, "widen", {"layer": layer, "to": widths[layer] + self.grow_by, "init": self.init,
                                           "seed": self.seed + self.seed_offset * index + layer}) for layer in layers]


class MorphPlugin(Plugin):
    """Morphs the net before the experiences a schedule (from config) or a policy (from a
    strategy, e.g. grow_ewc's) names, and records each morph's report and recovery."""

    def __init__(self, schedule: list[MorphStep], every_n_steps: int = 0, eval_batch_size: int = 1024, policy=None,
                 probe_size: int = RunSettings.probe_size, train_mode_gap: bool = RunSettings.train_mode_gap):
        from neumeta_cl.morph import MORPHS

        for step in schedule:
            MORPHS.get(step.op)  # unknown operator names fail before any training
        self.schedule, self.every_n_steps, self.eval_batch_size = schedule, every_n_steps, eval_batch_size
        self.policy, self.probe_size, self.train_mode_gap = policy, probe_size, train_mode_gap
        self.pending: list[dict] = []
        self.probe: StabilityProbe | None = None

    def before_run(self, run) -> None:
        late = [s for s in self.schedule if not 0 <= s.at < run.stream.n_experiences]
        if late:
            raise ConfigError(f"morph.schedule has a morph at experience {late[0].at}, but the stream has "
                              f"experiences 0..{run.stream.n_experiences - 1}; change `at` or benchmark.n_experiences.")

    def before_experience(self, run) -> None:
        from neumeta_cl.morph import MORPHS

        index = run.index
        self.pending, self.probe = [], None
        steps = [s for s in self.schedule if s.at == index]
        steps += self.policy.plan(run) if self.policy is not None else []
        for step in steps:
            seen = run.stream.test[:index]
            before = accuracy_row(run.net, seen, self.eval_batch_size, run.device) if seen else []
            result = MORPHS.get(step.op)(run.net, **step.kwargs, probe=probe_batch(run, self.probe_size, self.train_mode_gap))
            run.replace_net(result)
            after = accuracy_row(run.net, seen, self.eval_batch_size, run.device) if seen else []
            self.pending.append({"at": index, **result.report.to_dict(), "acc_before": before, "acc_after": after,
                                 "acc_seen_before": float(np.mean(before)) if before else None,
                                 "acc_seen_after": float(np.mean(after)) if after else None})

    def training_callbacks(self, run) -> list:
        if self.pending and self.every_n_steps and run.index > 0:
            self.probe = StabilityProbe(run.stream.test[:run.index], self.every_n_steps, self.eval_batch_size)
            return [self.probe]
        return []

    def after_experience(self, run) -> None:
        if not self.pending:
            return
        if self.probe is not None:
            s = self.probe.summary()
            means = [float(np.mean(row)) for row in s["acc_earlier"]]
            target = self.pending[0]["acc_seen_before"]
            # Steps after the morph until the seen experiences are back at their pre-morph accuracy.
            recovered = next((st for st, m in zip(s["steps"], means) if m >= target - 1e-9), None)
            for record in self.pending:
                record.update(steps_to_recover=recovered, stability_min=s["mean_min"], stability_curve=s)
        run.record.morphs.extend(self.pending)
