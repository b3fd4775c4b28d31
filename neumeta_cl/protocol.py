"""The contract between the continual loop and everything it drives. Read this first.

The loop (``neumeta_cl.runner.ContinualRunner``) trains one *strategy* on a stream, one experience
at a time, and calls *plugins* at named events around each experience:

    before_run(run)                    once, at the start (or the resumption) of a run
    for each experience i:
        before_experience(run)         morphs replace the net here (``run.replace_net``)
        strategy.before_experience(experience)
        training_callbacks(run)        Lightning callbacks for this experience's Trainer
        Trainer.fit(strategy)          in every step the strategy calls its own plugins':
                                         loss(strategy, x, t, logits), after_backward(strategy),
                                         after_step(strategy)
        after_training(run)            consolidation that belongs to the experience (EWC's Fisher,
                                       a replay buffer update, PackNet's prune-and-freeze)
        row i of R = evaluate every test experience
        after_experience(run)          ``run.record`` (an ``ExperienceRecord``) is filled in;
                                       plugins add their own fields, recorders write them out
        checkpoint                     everything below, atomically: a killed run resumes here
    after_run(run)                     once, however the run ended (``run.outcome.status``)

There is one plugin kind (``Plugin``). A strategy brings its own (``Strategy.plugins``: EWC's
penalty, a replay buffer, NeuMeta's width sweep, grow_ewc's morph policy); the recipe adds the
morph schedule from config and the recorders. Lightning callbacks stay for what happens inside an
epoch (probes of the learning curve).

**State.** Every stateful part saves and restores itself with ``state_dict()`` /
``load_state_dict(state)``: plain data only (tensors, numbers, strings, lists, dicts, tuples), so a
checkpoint loads with ``torch.load(weights_only=True)``. A network is saved with its structure
(``nets.structure``) so morphed nets come back with their widths, depth and heads.

**The net.** Read it from ``strategy.net``; only ``run.replace_net(result)`` replaces it, which also
remaps every plugin's anchors through the morph's ``ParamMap`` (``Plugin.remap``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the protocol imports nothing at run time
    import pytorch_lightning as pl
    import torch

    from neumeta_cl.morph.param_map import ParamMap


class Plugin:
    """A part of a run with named events. Override only what you need; every event is a no-op.

    Events before and after an experience get the run (``ContinualRunner``): ``run.index``,
    ``run.experience`` (the data trained on), ``run.strategy``, ``run.net``, ``run.device``,
    ``run.stream``, ``run.outcome`` (R, b, records) and, in ``after_experience``, ``run.record``.
    The in-step events get the strategy module, and reach only the plugins the strategy is built from.
    """

    # -- around an experience (called by the loop) ------------------------------------------
    def before_run(self, run) -> None:
        pass

    def before_experience(self, run) -> None:
        pass

    def training_callbacks(self, run) -> list["pl.Callback"]:
        return []

    def after_training(self, run) -> None:
        pass

    def after_experience(self, run) -> None:
        pass

    def after_run(self, run) -> None:
        pass

    # -- inside a training step (called by the strategy) ------------------------------------
    def loss(self, strategy, x: "torch.Tensor", t: "torch.Tensor", logits: "torch.Tensor"):
        """A term added to the strategy's loss (a penalty, a distillation); 0.0 for none."""
        return 0.0

    def after_backward(self, strategy) -> None:
        """Gradients are in ``p.grad`` and the optimizer has not stepped: mask or project them here."""

    def after_step(self, strategy) -> None:
        """The optimizer has stepped: restore frozen values, update running statistics."""

    # -- morphs and state -------------------------------------------------------------------
    def remap(self, param_map: "ParamMap") -> None:
        """The net was morphed: move per-parameter state (anchors, importances) through the map."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class StrategyReport:
    """What the strategy did in an experience (``Strategy.report``), recorded under ``strategy``."""

    info: dict = field(default_factory=dict)  # anything JSON-able, kept in results.json
    scalars: dict[str, float] = field(default_factory=dict)  # also logged to W&B as strategy/<key>
    morphs: list[dict] = field(default_factory=list)  # morphs the strategy made itself (prune_grow)

    def to_dict(self) -> dict:
        return {**self.info, **({"scalars": self.scalars} if self.scalars else {})}


@dataclass
class ExperienceRecord:
    """One experience of a run, as results.json stores it. Each group of fields has one writer."""

    # -- the loop ---------------------------------------------------------------------------
    index: int
    train_samples: int
    steps: int  # optimizer steps in this experience
    global_step: int  # optimizer steps since the start of the run
    train_seconds: float  # Trainer.fit minus the probes' evaluations
    probe_seconds: float
    eval_seconds: float
    accuracy: list[float]  # row `index` of R
    lca: float | None
    lca_z: list[float]
    steps_to_95: int | None
    seconds_to_95: float | None
    curve: dict
    stability: dict | None
    parameters: int
    widths: list[int]
    flops: int | None = None  # FLOPs of a 1-sample forward of the net after this experience (morph.report)
    # -- the strategy (Strategy.report) -----------------------------------------------------
    strategy: dict = field(default_factory=dict)
    # -- morph plugins (scheduled and policy morphs), in the order they ran -------------------
    morphs: list[dict] = field(default_factory=list)
    strategy_morphs: list[dict] = field(default_factory=list)  # the strategy's own (StrategyReport.morphs)
    # -- NeuMeta's width sweep --------------------------------------------------------------
    widths_eval: list[dict] | None = None
    budget_eval: list[dict] | None = None  # class-incremental with a task classifier: the same budgets, split
    generator: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["morphs"] = d["morphs"] + d.pop("strategy_morphs")  # results.json keeps one list
        for key in ("widths_eval", "budget_eval", "generator"):  # only NeuMeta runs have them
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExperienceRecord":
        return cls(**d)


@dataclass(frozen=True)
class RunSettings:
    """What plugins need to know about the run they are part of (from the config)."""

    run_dir: Path | None = None  # files a plugin writes go here (e.g. NeuMeta's generator.pt)
    eval_batch_size: int = 1024
    probe_size: int = 64  # samples a morph's preservation error is measured on
    train_mode_gap: bool = False  # also measure it in train mode (BatchNorm nets; twice the probe forwards)
    morph_every_n_steps: int = 0  # accuracy on earlier experiences every N steps after a morph


class Strategy:
    """What the loop calls on a strategy. ``strategies.ContinualModule`` implements it as a
    LightningModule; this class only documents the contract (the loop never imports a strategy).

    - ``net``: the network being trained; ``net(x, t)`` returns logits.
    - ``train_data(stream, index)``: what experience ``index`` trains on (joint: the union so far).
    - ``before_experience(experience)`` / ``after_training(experience)``.
    - ``epochs(configured)``: epochs over ``train_data`` this experience (``train.epochs`` unless
      the strategy trains its own data for its own count, as GDumb its memory).
    - ``train_batch_size(configured)``: the batch size of those epochs (``train.batch_size`` unless
      the strategy's step has a fixed cost worth spreading over more samples, as NeuMeta's INR pass).
    - ``plugins(settings)``: the plugins this strategy brings, in the order they run.
    - ``replace_net(net, param_map)``: adopt a morphed net; plugins' anchors follow the map.
    - ``report()``: a ``StrategyReport`` of the experience just finished.
    - ``state_dict()`` / ``load_state_dict(state)``: the net with its structure, every plugin,
      and every random generator the strategy owns.
    """

    net: Any


def state_of(parts: list) -> list[dict]:
    """The state of several parts, in order (plugins, say)."""
    return [p.state_dict() for p in parts]


def load_state_of(parts: list, states: list[dict]) -> None:
    if len(parts) != len(states):
        raise ValueError(f"the checkpoint holds the state of {len(states)} parts, this run has {len(parts)}")
    for p, s in zip(parts, states):
        p.load_state_dict(s)
