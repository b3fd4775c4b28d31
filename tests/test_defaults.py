"""Every default lives in configs/: no constructor default may say something else."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from neumeta_cl.nets import MODELS
from neumeta_cl.paths import config_dir
from neumeta_cl.protocol import RunSettings
from neumeta_cl.runner import ContinualRunner
from neumeta_cl.strategies import STRATEGIES, OptimConfig

NOT_CONFIG = {"self", "net", "optim", "batch_size", "seed", "parts", "input_shape", "n_classes", "heads"}


def yaml_of(group: str, name: str) -> dict:
    return yaml.safe_load((config_dir() / group / f"{name}.yaml").read_text())


def defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if k not in NOT_CONFIG and p.default is not inspect.Parameter.empty}


def contradictions(fn, cfg: dict) -> list[str]:
    """Constructor defaults that differ from the config (None stands for a config list or null)."""
    out = []
    for key, value in defaults(fn).items():
        if key not in cfg:
            out.append(f"{key}={value!r} has no config key")
        elif value is not None and value != cfg[key]:
            out.append(f"{key}: constructor {value!r}, config {cfg[key]!r}")
    return out


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_defaults_are_the_configs(name):
    cfg = yaml_of("strategy", name)
    cls = STRATEGIES.get(name)
    params = set(inspect.signature(cls.__init__).parameters) - NOT_CONFIG
    assert set(cfg) - {"name"} == params, "the config and the constructor list different keys"
    assert not contradictions(cls.__init__, cfg)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_defaults_are_the_configs(name):
    assert not contradictions(MODELS.get(name).__init__, yaml_of("model", name))


def test_train_and_run_defaults_are_the_root_configs():
    root = yaml.safe_load((config_dir() / "config.yaml").read_text())
    train, metrics, morph = root["train"], root["metrics"], root["morph"]
    optim = {f.name: f.default for f in dataclasses.fields(OptimConfig)}
    assert optim == {"name": train["optimizer"], "lr": train["lr"], "momentum": train["momentum"],
                     "weight_decay": train["weight_decay"], "schedule": train["lr_schedule"],
                     "lr_decay": train["lr_decay"]}
    settings = RunSettings()
    assert (settings.eval_batch_size, settings.probe_size, settings.morph_every_n_steps) == (
        train["eval_batch_size"], morph["probe_size"], morph["every_n_steps"])
    runner = defaults(ContinualRunner.__init__)
    expected = {"epochs": train["epochs"], "eval_batch_size": train["eval_batch_size"],
                "lca_beta": metrics["lca_beta"], "curve_every_n_steps": metrics["curve_every_n_steps"],
                "stability_every_n_steps": metrics["stability_every_n_steps"],
                "log_every_n_steps": metrics["log_every_n_steps"], "data_seed_offset": train["data_seed_offset"]}
    assert {k: runner[k] for k in expected} == expected


def test_contradictions_are_found():
    def f(self, net, alpha: float = 1.0, beta: int = 3):
        pass

    assert contradictions(f, {"alpha": 1.0, "beta": 4}) == ["beta: constructor 3, config 4"]
    assert contradictions(f, {"alpha": 1.0}) == ["beta=3 has no config key"]
