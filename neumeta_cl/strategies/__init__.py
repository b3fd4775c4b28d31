"""Strategies: LightningModules registered by name (``strategy=ewc`` on the command line)."""

from __future__ import annotations

import inspect

from torch import nn

from neumeta_cl.errors import ConfigError
from neumeta_cl.registry import Registry
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.optim import LR_SCHEDULES, OPTIMIZERS, OptimConfig
from neumeta_cl.strategies.ewc import EWC, EWCPenalty
from neumeta_cl.strategies.grow import GrowEWC
from neumeta_cl.strategies.prune_grow import PruneGrow, UnitPacking
from neumeta_cl.strategies.lwf import Distillation, LwF
from neumeta_cl.strategies.naive import Joint, Naive
from neumeta_cl.strategies.neumeta import NeuMeta
from neumeta_cl.strategies.replay import Replay, ReplayBuffer
from neumeta_cl.strategies.si import SI
from neumeta_cl.strategies.mas import MAS
from neumeta_cl.strategies.agem import AGEM
from neumeta_cl.strategies.er_ace import ERACE
from neumeta_cl.strategies.der import DER
from neumeta_cl.strategies.gdumb import GDumb
from neumeta_cl.strategies.flow import Flow
from neumeta_cl.strategies.clewi import Clewi

STRATEGIES: Registry = Registry("strategy", "strategies")
for _name, _cls in {"naive": Naive, "joint": Joint, "ewc": EWC, "replay": Replay, "lwf": LwF,
                    "grow_ewc": GrowEWC, "prune_grow": PruneGrow, "neumeta": NeuMeta,
                    "si": SI, "mas": MAS, "agem": AGEM, "er_ace": ERACE, "der": DER, "gdumb": GDumb,
                    "flow": Flow, "clewi": Clewi}.items():
    STRATEGIES.register(_name)(_cls)


def build_strategy(cfg: dict, net: nn.Module, optim: OptimConfig, batch_size: int, seed: int) -> ContinualModule:
    """Build a registered strategy from its config node (``name`` plus the strategy's own keys)."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    cls = STRATEGIES.get(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "net", "optim", "batch_size", "seed"}
    unknown = sorted(set(cfg) - accepted)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(unknown)} for strategy '{name}'; valid keys are: {', '.join(sorted(accepted)) or 'none'}."
        )
    return cls(net, optim, batch_size=batch_size, seed=seed, **cfg)


__all__ = [
    "STRATEGIES", "OPTIMIZERS", "LR_SCHEDULES", "build_strategy", "ContinualModule", "OptimConfig",
    "Naive", "Joint", "NeuMeta", "EWC", "GrowEWC", "PruneGrow", "UnitPacking", "EWCPenalty", "Replay", "ReplayBuffer", "LwF", "Distillation",
    "SI", "MAS", "AGEM", "ERACE", "DER", "GDumb", "Flow", "Clewi",
]
