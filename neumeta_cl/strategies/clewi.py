"""``clewi``: continual learning with weight interpolation (Kozal, Wasilewski, Krawczyk & Wozniak, 2024).

Experience replay while training; at the end of each experience the previous network (the one the
experience started from) is aligned to the new one by permutation (``landscape.align``, weight
matching by default), the two are interpolated,

    theta = (1 - alpha) theta_new + alpha P(theta_old)        (alpha = 0.5: halfway)

and BatchNorm statistics are recomputed on the replay buffer. The result is the next experience's
starting point. Each interpolation is recorded as a morph in results.json and W&B.
"""

from __future__ import annotations

import time

import torch

from neumeta_cl.errors import ConfigError
from neumeta_cl.landscape import LinearPath, align, reset_batchnorm_
from neumeta_cl.landscape.align import METHODS
from neumeta_cl.morph.report import MorphError
from neumeta_cl.nets.structure import load_net, net_state
from neumeta_cl.protocol import Plugin, StrategyReport
from neumeta_cl.strategies.flow import adopt_, move_record, seen_accuracy, snapshot
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.replay import Replay, ReplayBuffer


class WeightInterpolation(Plugin):
    def __init__(self, buffer: ReplayBuffer, alpha: float = 0.5, align: str = "weights", seed: int = 0):
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"strategy.alpha must lie in [0, 1], got {alpha}.")
        if align not in METHODS:
            raise ConfigError(f"Unknown strategy.align '{align}'; valid methods are: {', '.join(METHODS)}.")
        self.buffer, self.alpha, self.align, self.seed = buffer, alpha, align, seed
        self.eval_batch_size = 1024  # set from the run's settings (Clewi.plugins)
        self.previous: dict | None = None  # net_state the current experience started from
        self.moves: list[dict] = []

    def state_dict(self) -> dict:
        return {"previous": self.previous, "moves": self.moves}

    def load_state_dict(self, state: dict) -> None:
        self.previous, self.moves = state["previous"], list(state["moves"])

    def remap(self, param_map) -> None:
        if self.previous is not None:
            raise MorphError("strategy=clewi interpolates with the previous network; it cannot follow a structural "
                             "morph after experience 0 (both networks need one structure).")

    def before_experience(self, run) -> None:
        self.previous = snapshot(run.net) if run.index > 0 else None

    def after_training(self, run) -> None:
        if self.previous is None:
            return
        net = run.net
        t0 = time.perf_counter()
        acc_before = seen_accuracy(run, self.eval_batch_size)
        before = load_net(net_state(net)).to(run.device)
        old = load_net(self.previous).to(run.device)
        x, t = self.buffer.x.to(run.device), self.buffer.t.to(run.device)
        aligned = align(before, old, self.align, data=(x, t), seed=self.seed + run.index)
        merged = LinearPath(before, aligned.net).net(self.alpha)
        adopt_(net, merged)
        reset_batchnorm_(net, (x, t))
        detail = {"alpha": self.alpha, "buffer": len(x), **aligned.summary()}
        self.moves.append({"experience": run.index,
                           **move_record(run, "clewi", before, acc_before, detail, t0, self.eval_batch_size)})


class Clewi(Replay):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, buffer_size: int = 200,
                 policy: str = "class_balanced", mem_batch_size: int | None = None, alpha: float = 0.5,
                 align: str = "weights"):
        super().__init__(net, optim, batch_size=batch_size, seed=seed, buffer_size=buffer_size, policy=policy,
                         mem_batch_size=mem_batch_size)
        self.interpolation = WeightInterpolation(self.buffer, alpha, align, seed)
        self.parts.append(self.interpolation)  # after the buffer: BatchNorm is reset on a buffer that holds this experience

    def plugins(self, settings):
        self.interpolation.eval_batch_size = settings.eval_batch_size
        return super().plugins(settings)

    def report(self) -> StrategyReport:
        moves = [m for m in self.interpolation.moves if m["experience"] == self.experience_index]
        return StrategyReport(morphs=[{k: v for k, v in m.items() if k != "experience"} for m in moves])
