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
from neumeta_cl.runner.evaluation import accuracy_row
from neumeta_cl.runner.hooks import ExperienceHook
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


def probe_batch(runner, index: int, n: int = 256):
    """Inputs (and task labels) the preservation error is measured on: the experience about to train."""
    exp = runner.stream.train[index]
    return exp.x[:n].to(runner.device), exp.t[:n].to(runner.device)


def remap_pieces(module, param_map) -> None:
    """Let every strategy piece that anchors parameters (EWC, SI, ...) follow the morph."""
    for piece in module.pieces:
        if hasattr(piece, "remap"):
            piece.remap(param_map)


class GrowPolicy:
    """Add capacity for every new experience: widen each hidden layer by ``grow_by`` units.

    ``init="zero"`` (Net2Net with zero outgoing weights) keeps the function, so old experiences
    are untouched at the moment of growth; the new units start free of any anchor (EWC gives
    them zero importance), the old ones stay anchored. A light form of DEN / progressive nets.
    """

    def __init__(self, grow_by: int = 32, layers: list[int] | None = None, init: str = "zero", seed: int = 0):
        if grow_by <= 0:
            raise ConfigError(f"The grow policy needs grow_by > 0, got {grow_by}.")
        self.grow_by, self.layers, self.init, self.seed = grow_by, layers, init, seed

    def plan(self, runner, index: int) -> list[MorphStep]:
        if index == 0:
            return []
        widths = runner.net.widths
        layers = self.layers if self.layers is not None else range(len(widths))
        return [MorphStep(index, "widen", {"layer": layer, "to": widths[layer] + self.grow_by, "init": self.init,
                                           "seed": self.seed + 1000 * index + layer}) for layer in layers]


class MorphCallback(ExperienceHook):
    def __init__(self, schedule: list[MorphStep], every_n_steps: int = 0, eval_batch_size: int = 1024, policy=None):
        from neumeta_cl.morph import MORPHS

        for step in schedule:
            MORPHS.get(step.op)  # unknown operator names fail before any training
        self.schedule, self.every_n_steps, self.eval_batch_size = schedule, every_n_steps, eval_batch_size
        self.policy = policy
        self.pending: list[dict] = []
        self.probe: StabilityProbe | None = None

    def on_experience_start(self, runner, index: int) -> None:
        from neumeta_cl.morph import MORPHS

        self.pending, self.probe = [], None
        steps = [s for s in self.schedule if s.at == index]
        steps += self.policy.plan(runner, index) if self.policy is not None else []
        for step in steps:
            seen = runner.stream.test[:index]
            before = accuracy_row(runner.net, seen, self.eval_batch_size, runner.device) if seen else []
            result = MORPHS.get(step.op)(runner.net, **step.kwargs, probe=probe_batch(runner, index))
            runner.module.net = result.net.to(runner.device)
            remap_pieces(runner.module, result.param_map)
            after = accuracy_row(runner.net, seen, self.eval_batch_size, runner.device) if seen else []
            self.pending.append({"at": index, **result.report.to_dict(), "acc_before": before, "acc_after": after,
                                 "acc_seen_before": float(np.mean(before)) if before else None,
                                 "acc_seen_after": float(np.mean(after)) if after else None})

    def trainer_callbacks(self, runner, index: int) -> list:
        if self.pending and self.every_n_steps and index > 0:
            self.probe = StabilityProbe(runner.stream.test[:index], self.every_n_steps, self.eval_batch_size)
            return [self.probe]
        return []

    def on_experience_end(self, runner, index: int) -> None:
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
        record = runner.outcome.experiences[-1]
        record["morphs"] = self.pending + record.get("morphs", [])
