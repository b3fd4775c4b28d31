"""``flow``: after each experience, move to a low-loss point between the old and the new solution.

Mode-connectivity SGD (Mirzadeh et al., ICLR 2021). The net learns experience t starting from the
previous continual solution w_prev, reaching a new minimum w_curr. Then, on a small replay memory
of every experience seen so far (a ``ReplayBuffer``, updated with experience t first), it moves
along a path between the two:

- ``path: mcsgd`` (default, the paper's algorithm): the point whose straight line to w_prev has
  low loss on the memory of earlier experiences and whose line to w_curr has low loss on the
  current experience, found by SGD (``landscape.mode_connectivity.mcsgd_point``); ``line_epochs``
  epochs of mini-batch steps of ``line_batch_size`` over the memory;
- ``path: line | bezier | ode``: the point of the straight line, of a Bezier curve with a bend
  trained on the memory, or of a trained ODE flow (``landscape``), with the lowest memory loss
  (``lowest_point``, ``grid`` evenly spaced t).

BatchNorm statistics are then re-estimated on the memory. The result is the continual solution
that is evaluated, and the w_prev of the next experience's path. Where the next experience trains
from is ``train_from``:

- ``connected`` (default): from that continual solution;
- ``sequential``: from w_curr, the minimum the last experience's training reached, so the training
  trajectory is plain sequential fine-tuning and the connected points ride beside it (the MC-SGD
  research code trains task t from the sequential model of task t-1, and SequeL's port reverts
  the backbone to it after each move).

Training itself is plain fine-tuning (no replay in the loss), as in MC-SGD; ``train_replay`` adds
the memory's samples to each batch, as replay. Each move is recorded
as a morph (``MorphReport`` plus accuracy on the seen experiences before and after) in
results.json and W&B.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.landscape import CurvePath, FlowPath, LinearPath, reset_batchnorm_, train_bend, train_flow
from neumeta_cl.landscape.mode_connectivity import lowest_point, mcsgd_point
from neumeta_cl.morph.param_map import ParamMap
from neumeta_cl.morph.report import MorphError, finish
from neumeta_cl.nets.structure import load_net, net_state
from neumeta_cl.protocol import Plugin, StrategyReport
from neumeta_cl.runner.evaluation import accuracy_row
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.replay import Replay, ReplayBuffer

PATHS = ("mcsgd", "line", "bezier", "ode")
TRAIN_FROM = ("connected", "sequential")


def snapshot(net: torch.nn.Module) -> dict:
    """``net_state`` with its own copy of the weights (``net_state`` shares the live tensors, which
    training then changes in place)."""
    state = net_state(net)
    return {**state, "weights": {k: v.detach().clone() for k, v in state["weights"].items()}}


def adopt_(net: torch.nn.Module, source: torch.nn.Module) -> None:
    """In place: ``net`` takes ``source``'s parameters and buffers (same structure)."""
    with torch.no_grad():
        net.load_state_dict(source.state_dict())


def seen_accuracy(run, eval_batch_size: int) -> list[float]:
    return accuracy_row(run.net, run.stream.test[: run.index + 1], eval_batch_size, run.device)


def move_record(run, op: str, before: torch.nn.Module, acc_before: list[float], detail: dict, t0: float,
                eval_batch_size: int) -> dict:
    """A move along a path as a morph record: MorphReport fields and accuracy on the seen experiences."""
    net = run.net
    result = finish(op, before, net, ParamMap.start(net).seal(net), detail, t0)
    acc_after = seen_accuracy(run, eval_batch_size)
    return {"at": f"end of experience {run.index}", **result.report.to_dict(), "acc_before": acc_before,
            "acc_after": acc_after, "acc_seen_before": float(np.mean(acc_before)),
            "acc_seen_after": float(np.mean(acc_after))}


class ModeConnectivity(Plugin):
    """Holds the previous continual solution; after training, moves the net along a path (see module doc)."""

    def __init__(self, memory: ReplayBuffer, path: str = "mcsgd", init_position: float = 0.1, line_samples: int = 10,
                 line_lr: float = 0.05, line_momentum: float = 0.8, line_epochs: int = 1, line_batch_size: int = 64,
                 curve_steps: int = 200, curve_lr: float = 0.05, grid: int = 25, seed: int = 0,
                 train_from: str = "connected"):
        if path not in PATHS:
            raise ConfigError(f"Unknown strategy.path '{path}'; valid paths are: {', '.join(PATHS)}.")
        if train_from not in TRAIN_FROM:
            raise ConfigError(f"Unknown strategy.train_from '{train_from}'; valid choices are: {', '.join(TRAIN_FROM)}.")
        if not 0.0 <= init_position <= 1.0:
            raise ConfigError(f"strategy.init_position must lie in [0, 1], got {init_position}.")
        for key, value in (("line_samples", line_samples), ("line_epochs", line_epochs),
                           ("line_batch_size", line_batch_size), ("grid", grid)):
            if int(value) < 1:
                raise ConfigError(f"strategy.{key} must be a positive integer, got {value}.")
        if curve_steps < 0:
            raise ConfigError(f"strategy.curve_steps must be >= 0, got {curve_steps}.")
        self.memory, self.path = memory, path
        self.init_position, self.line_samples, self.line_lr, self.line_momentum = init_position, line_samples, line_lr, line_momentum
        self.line_epochs, self.line_batch_size = line_epochs, line_batch_size
        self.curve_steps, self.curve_lr, self.grid, self.seed = curve_steps, curve_lr, grid, seed
        self.train_from = train_from
        self.eval_batch_size = 1024  # set from the run's settings (Flow.plugins)
        self.anchor: dict | None = None  # net_state of the previous continual solution
        self.trained: dict | None = None  # train_from=sequential: the last minimum reached (a state_dict)
        self.earlier = None  # the memory as it was before this experience: (x, y, t) of earlier experiences
        self.moves: list[dict] = []

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "moves": self.moves, "trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        self.anchor, self.moves, self.trained = state["anchor"], list(state["moves"]), state.get("trained")

    def remap(self, param_map) -> None:
        if self.anchor is not None:
            raise MorphError("strategy=flow keeps the previous solution to build a path from; it cannot follow a "
                             "structural morph after experience 0 (both ends of a path need one structure).")

    def before_experience(self, run) -> None:
        m = self.memory
        self.earlier = None if len(m) == 0 else (m.x, m.y, m.t)  # update() replaces these tensors, never edits them
        if self.train_from == "sequential" and self.trained is not None:
            with torch.no_grad():  # train from the last minimum, not from the connected point evaluated
                run.net.load_state_dict(self.trained)

    def after_training(self, run) -> None:
        net = run.net
        if self.train_from == "sequential":
            self.trained = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if self.anchor is None:  # the first minimum is the first continual solution
            self.anchor = snapshot(net)
            return
        t0 = time.perf_counter()
        acc_before = seen_accuracy(run, self.eval_batch_size)
        before = load_net(net_state(net)).to(run.device)
        prev = load_net(self.anchor).to(run.device)
        memory = tuple(a.to(run.device) for a in (self.memory.x, self.memory.y, self.memory.t))
        seed = self.seed + 1000 * run.index
        detail = {"path": self.path, "memory": len(memory[1])}
        if self.path == "mcsgd":
            earlier = tuple(a.to(run.device) for a in self.earlier)
            exp = run.experience
            current = tuple(a.to(run.device) for a in (exp.x, exp.y, exp.t))
            params, info = mcsgd_point(prev, before, earlier, current, self.init_position, self.line_samples, self.line_lr,
                                       self.line_momentum, self.line_epochs, self.line_batch_size, seed)
            with torch.no_grad():
                for n, p in net.named_parameters():
                    p.copy_(params[n])
            detail.update(info)
        else:
            if self.path == "line":
                path = LinearPath(prev, before)
            else:
                path = train_bend(CurvePath(prev, before, "bezier"), memory, self.curve_steps, self.curve_lr,
                                  batch_size=self.line_batch_size, seed=seed)
                if self.path == "ode":
                    path = train_flow(FlowPath.from_curve(path), memory, self.curve_steps, self.curve_lr,
                                      batch_size=self.line_batch_size, seed=seed + 1)
            t_star, best, losses = lowest_point(path, memory, self.grid, bn_data=memory[0])
            adopt_(net, best)
            detail.update({"t": t_star, "memory_loss": losses, **path.describe()})
        reset_batchnorm_(net, (memory[0], memory[2]))
        self.anchor = snapshot(net)
        record = move_record(run, f"flow_{self.path}", before, acc_before, detail, t0, self.eval_batch_size)
        self.moves.append({"experience": run.index, **record})


class Flow(Replay):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 200,
                 policy: str = "class_balanced", path: str = "mcsgd", init_position: float = 0.1, line_samples: int = 10,
                 line_lr: float = 0.05, line_momentum: float = 0.8, line_epochs: int = 1, line_batch_size: int = 64,
                 curve_steps: int = 200, curve_lr: float = 0.05, grid: int = 25, train_from: str = "connected",
                 train_replay: bool = False, mem_batch_size: int | None = None):
        super().__init__(net, optim, batch_size=batch_size, seed=seed, buffer_size=buffer_size, policy=policy,
                         mem_batch_size=mem_batch_size)
        if not isinstance(train_replay, bool):
            raise ConfigError(f"strategy.train_replay must be true or false, got {train_replay!r}.")
        self.memory = self.buffer
        self.train_replay = train_replay
        self.connect = ModeConnectivity(self.memory, path, init_position, line_samples, line_lr, line_momentum,
                                        line_epochs, line_batch_size, curve_steps, curve_lr, grid, seed, train_from)
        # After the memory: it takes the experience before the move, so the move sees every experience.
        self.parts.append(self.connect)

    def training_batch(self, batch):
        """Plain fine-tuning, as MC-SGD; ``train_replay``: the memory's samples join each batch, as replay."""
        return super().training_batch(batch) if self.train_replay else batch

    def plugins(self, settings):
        self.connect.eval_batch_size = settings.eval_batch_size
        return super().plugins(settings)

    def report(self) -> StrategyReport:
        moves = [m for m in self.connect.moves if m["experience"] == self.experience_index]
        return StrategyReport(morphs=[{k: v for k, v in m.items() if k != "experience"} for m in moves])
