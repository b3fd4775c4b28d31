"""The recipe for one run: config -> stream -> net -> strategy -> runner, with results on disk."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from neumeta_cl.config import to_dict, validate
from neumeta_cl.data import build_stream
from neumeta_cl.nets import build_model
from neumeta_cl.runner import ContinualRunner, ExperienceHook, RunOutcome
from neumeta_cl.strategies import OptimConfig, build_strategy
from neumeta_cl.tracking import wandb_run
from neumeta_cl.tracking.provenance import git_commit, package_versions
from neumeta_cl.tracking.recorders import ResultsRecorder, WandbRecorder


@dataclass
class RunResult:
    name: str
    outcome: RunOutcome
    results_path: Path
    wandb_dir: str | None


def default_run_name(cfg: DictConfig) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.benchmark.name}-{cfg.strategy.name}-s{cfg.seed}-{stamp}"


def show_progress(setting) -> bool:
    return sys.stderr.isatty() if setting == "auto" else bool(setting)


def build_stream_from(cfg: DictConfig):
    b = cfg.benchmark
    return build_stream(
        dataset=b.dataset, kind=b.kind, n_experiences=b.n_experiences, seed=cfg.seed, scenario=b.scenario,
        root=b.root, download=b.download,
        fixed_class_order=list(b.fixed_class_order) if b.fixed_class_order is not None else None,
        rotations=list(b.rotations) if b.rotations is not None else None,
    )


def morph_hooks(cfg: DictConfig, module) -> list[ExperienceHook]:
    """``cfg.morph.schedule`` and the strategy's own morph policy as one experience hook (or none)."""
    morph = cfg.morph
    if not morph.schedule and module.morph_policy is None:
        return []
    from neumeta_cl.callbacks import MorphCallback, MorphStep

    steps = [MorphStep.from_config(to_dict(entry)) for entry in morph.schedule]
    return [MorphCallback(steps, morph.every_n_steps, cfg.train.eval_batch_size, policy=module.morph_policy)]


def run_continual(cfg: DictConfig, extra_hooks: list[ExperienceHook] | None = None) -> RunResult:
    """Train ``cfg.strategy`` on ``cfg.benchmark``; returns once results.json and the W&B run are closed.

    On failure results.json keeps every finished experience, records ``status: failed`` and the
    reason, and the exception propagates.
    """
    validate(cfg)
    if cfg.train.threads:
        torch.set_num_threads(int(cfg.train.threads))
    stream = build_stream_from(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    t = cfg.train
    optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay)
    module = build_strategy(to_dict(cfg.strategy), net, optim, t.batch_size, cfg.seed)

    name = cfg.run_name or default_run_name(cfg)
    run_dir = Path(cfg.output_dir) / name
    resolved = to_dict(cfg)
    logger = wandb_run.make_wandb_logger(cfg.logger.mode, cfg.logger.project, name, run_dir, resolved,
                                         cfg.logger.entity, list(cfg.logger.tags))
    wandb_dir = wandb_run.run_dir(logger)
    header = {
        "name": name, "config": resolved, "seed": cfg.seed, "versions": package_versions(), "git": git_commit(),
        "stream": {"name": stream.name, "kind": stream.kind, "scenario": stream.scenario,
                   "n_experiences": stream.n_experiences, "class_order": stream.class_order,
                   "classes": [e.classes for e in stream.train], "task_labels": [e.task_label for e in stream.train],
                   "train_sizes": [len(e.y) for e in stream.train], "test_sizes": [len(e.y) for e in stream.test]},
        "model": {"name": cfg.model.name, "widths": list(module.net.widths),
                  "parameters": sum(p.numel() for p in module.net.parameters())},
        "wandb_dir": wandb_dir,
    }
    morphs = morph_hooks(cfg, module)
    # The strategy's own hooks run before the recorders, which write what those hooks add.
    hooks = [*(extra_hooks or []), *morphs, *module.experience_hooks(run_dir),
             ResultsRecorder(run_dir / "results.json", header), WandbRecorder(logger)]
    module.show_progress = show_progress(t.progress_bar)
    runner = ContinualRunner(
        stream, module, epochs=t.epochs, batch_size=t.batch_size, seed=cfg.seed, eval_batch_size=t.eval_batch_size,
        hooks=hooks, lca_beta=cfg.metrics.lca_beta, curve_every_n_steps=cfg.metrics.curve_every_n_steps,
        stability_every_n_steps=cfg.metrics.stability_every_n_steps,
        log_fn=None if logger is None else (lambda metrics, step: wandb_run.log_metrics(logger, metrics, step)),
        log_every_n_steps=cfg.metrics.log_every_n_steps,
        trainer_kwargs={"accelerator": t.accelerator, "devices": 1, "deterministic": t.deterministic,
                        "enable_progress_bar": module.show_progress, "default_root_dir": str(run_dir),
                        "logger": logger if logger is not None else False},
    )
    outcome = runner.run()
    return RunResult(name, outcome, run_dir / "results.json", wandb_dir)
