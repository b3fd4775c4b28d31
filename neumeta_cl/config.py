"""Configs: Hydra's compose API over the groups in ``configs/``, with errors a person can act on.

We compose instead of using ``@hydra.main`` so the CLI owns the process (no working-directory
changes, no Hydra output folders) and every config error becomes one sentence.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from neumeta_cl.errors import ConfigError
from neumeta_cl.paths import config_dir, experiments_dir

GROUPS = ("benchmark", "model", "strategy", "logger")


def experiment_choices() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _keys_at(cfg: DictConfig, dotted: str) -> list[str]:
    """Valid keys of the node that would hold ``dotted`` (for 'unknown key' errors)."""
    node = cfg
    for part in dotted.split(".")[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            break
        node = node[part]
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _translate(err: Exception, overrides: list[str]) -> ConfigError:
    msg = str(err)
    m = re.search(r"Could not find '(\w+)/([^']+)'", msg)
    if m and m.group(1) in GROUPS:
        group, name = m.groups()
        plural = "strategies" if group == "strategy" else f"{group}s"
        return ConfigError(f"Unknown {group} '{name}'; valid {plural} are: {', '.join(group_choices(group))}.")
    m = re.search(r"Could not override '([^']+)'", msg) or re.search(r"Key '([^']+)' is not in struct", msg)
    if m:
        key = m.group(1)
        groups_only = [o for o in overrides if o.split("=")[0] in GROUPS]
        try:
            base = compose(groups_only)
        except ConfigError:
            base = None
        valid = _keys_at(base, key) if base is not None else []
        hint = f"; valid keys here are: {', '.join(valid)}" if valid else ""
        return ConfigError(f"Unknown config key '{key}'{hint}. To add a new key deliberately, write +{key}=VALUE.")
    first = msg.strip().splitlines()[0] if msg.strip() else type(err).__name__
    return ConfigError(f"Invalid config override(s) {' '.join(overrides)}: {first}")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose the root config with command-line style overrides (``key=value``, ``group=choice``)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise _translate(e, overrides) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _positive(value, name: str, allow_zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be {kind}, got {value}; set it with {name}=<{kind} number>.")


def validate(cfg: DictConfig) -> None:
    """Checks that need no data: names, sizes and rates. Data-dependent checks happen where the data is."""
    from neumeta_cl.data import DATASETS, STREAM_KINDS
    from neumeta_cl.nets import MODELS
    from neumeta_cl.strategies import LR_SCHEDULES, OPTIMIZERS, STRATEGIES

    from neumeta_cl.tracking.run_folder import check_run_name

    _check_seed(cfg.seed)
    check_run_name(cfg.run_name)
    if not isinstance(cfg.resume, bool):
        raise ConfigError(f"resume must be true or false, got {cfg.resume!r}.")
    DATASETS.get(cfg.benchmark.dataset)
    STREAM_KINDS.get(cfg.benchmark.kind)
    MODELS.get(cfg.model.name)
    STRATEGIES.get(cfg.strategy.name)
    _positive(cfg.benchmark.n_experiences, "benchmark.n_experiences")
    for key in ("train_per_experience", "test_per_experience"):
        if cfg.benchmark[key] is not None:
            _positive(cfg.benchmark[key], f"benchmark.{key}")
    for key in ("epochs", "batch_size", "lr", "eval_batch_size"):
        _positive(cfg.train[key], f"train.{key}")
    _positive(cfg.train.weight_decay, "train.weight_decay", allow_zero=True)
    decay = cfg.train.lr_decay
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ConfigError(f"train.lr_decay must lie in (0, 1], got {decay!r}; each experience trains at "
                          f"train.lr * train.lr_decay ** index, so 1 keeps the rate and 0.8 is Stable SGD's decay.")
    if cfg.train.get("threads") is not None:
        _positive(cfg.train.threads, "train.threads")
    _positive(cfg.metrics.lca_beta, "metrics.lca_beta", allow_zero=True)
    _positive(cfg.metrics.curve_every_n_steps, "metrics.curve_every_n_steps", allow_zero=True)
    _positive(cfg.metrics.stability_every_n_steps, "metrics.stability_every_n_steps", allow_zero=True)
    sizes = cfg.model.get("widths") or cfg.model.get("channels") or []
    for i, w in enumerate(sizes):
        _positive(w, f"model.{'widths' if 'widths' in cfg.model else 'channels'}[{i}]")
    _check_strategy(cfg.strategy)
    _check_scenario(cfg)
    _positive(cfg.morph.probe_size, "morph.probe_size")
    if not isinstance(cfg.morph.train_mode_gap, bool):
        raise ConfigError(f"morph.train_mode_gap must be true or false, got {cfg.morph.train_mode_gap!r}.")
    _check_schedule(cfg)
    OPTIMIZERS.get(cfg.train.optimizer)
    LR_SCHEDULES.get(cfg.train.lr_schedule)


def _check_strategy(s: DictConfig) -> None:
    """Values each strategy needs; the constructors check the same for direct (Python) use."""
    for key in ("buffer_size", "mem_batch_size", "fisher_batch_size", "temperature", "si_lambda", "mas_lambda",
                "sample_size", "importance_batch_size", "eps", "clip", "epochs"):
        if s.get(key) is not None:
            _positive(s[key], f"strategy.{key}")
    for key in ("ewc_lambda",):
        if s.get(key) is not None:
            _positive(s[key], f"strategy.{key}", allow_zero=True)
    if s.name == "der":  # beta: null is DER (no label term), not a zero weight
        _positive(s.alpha, "strategy.alpha")
        if s.beta is not None and not s.beta > 0:
            raise ConfigError(f"strategy.beta must be positive, got {s.beta}; set strategy.beta=null for DER without "
                              f"the label term, or a positive number for DER++.")
    elif s.name == "mas":
        if s.alpha is None or not 0 <= s.alpha < 1:
            raise ConfigError(f"strategy.alpha (MAS's weight of the old importance) must lie in [0, 1), got {s.alpha}.")
    elif s.get("alpha") is not None:
        _positive(s.alpha, "strategy.alpha", allow_zero=True)
    if s.name == "agem" and s.sample_size > s.buffer_size:
        raise ConfigError(f"strategy.sample_size ({s.sample_size}) is larger than strategy.buffer_size ({s.buffer_size}): "
                          f"A-GEM draws its reference batch from the memory; lower sample_size or raise buffer_size.")


def _check_scenario(cfg: DictConfig) -> None:
    # PackNet-style freezing owns output rows per experience; in a domain-incremental stream every
    # experience shares all rows, so after the first one nothing could learn.
    if cfg.strategy.name == "prune_grow" and cfg.benchmark.scenario == "domain":
        raise ConfigError(f"strategy=prune_grow freezes each experience's head rows, and on the domain-incremental "
                          f"{cfg.benchmark.name} stream every experience uses all of them, so it would learn nothing "
                          f"after the first; use benchmark.scenario=task (one head per experience) or another strategy.")


def _check_added_keys(overrides: list[str]) -> None:
    """``+key=value`` adds a key Hydra does not know; we know every key, so an added one is a typo."""
    added = [o for o in overrides if o.startswith("+") and "=" in o]
    if not added:
        return
    base = compose([o for o in overrides if not o.startswith("+")])
    for o in added:
        key = o.lstrip("+").split("=", 1)[0]
        if key in GROUPS or OmegaConf.select(base, key, default="__missing__") != "__missing__":
            continue
        valid = _keys_at(base, key)
        hint = f"; valid keys here are: {', '.join(valid)}" if valid else ""
        raise ConfigError(f"Unknown config key '{key}' (added with +){hint}. Every key already exists in configs/: "
                          f"set it without the +, e.g. {key}=VALUE, after fixing its name.")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer from 0 to 4294967295, got {seed!r}; set it with seed=<integer>.")


def _check_schedule(cfg: DictConfig) -> None:
    n = cfg.benchmark.n_experiences
    for entry in cfg.morph.schedule:
        at = entry.get("at") if isinstance(entry, DictConfig) else None
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < n:
            raise ConfigError(f"morph.schedule has a morph at experience {at!r}, but the stream has experiences "
                              f"0..{n - 1}; change `at` or benchmark.n_experiences.")
    if cfg.morph.schedule and cfg.strategy.name == "neumeta":
        raise ConfigError("strategy=neumeta generates its networks at any width and takes no morph.schedule; "
                          "remove morph.schedule or choose another strategy.")


def load(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    overrides = list(overrides)
    cfg = compose(overrides)
    _check_added_keys(overrides)
    validate(cfg)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
