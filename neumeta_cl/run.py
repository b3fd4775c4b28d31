"""The recipe for one run: config -> run folder -> stream -> net -> strategy -> runner, results on disk."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from neumeta_cl.config import to_dict, validate
from neumeta_cl.data import build_stream
from neumeta_cl.data.streams import subsample_test
from neumeta_cl.errors import ConfigError
from neumeta_cl.nets import build_model
from neumeta_cl.plugins.morph import MorphPlugin, MorphStep
from neumeta_cl.protocol import ExperienceRecord, Plugin, RunSettings
from neumeta_cl.runner import ContinualRunner, RunOutcome
from neumeta_cl.runner.checkpoint import load_checkpoint, save_checkpoint
from neumeta_cl.runner.loop import pick_device
from neumeta_cl.strategies import OptimConfig, build_strategy
from neumeta_cl.tracking import wandb_run
from neumeta_cl.tracking.provenance import git_commit, package_versions, runtime
from neumeta_cl.tracking.recorders import ResultsRecorder, WandbRecorder
from neumeta_cl.tracking.atomic import TMP_PREFIX
from neumeta_cl.tracking.results import load_results
from neumeta_cl.tracking.run_folder import (RunFolder, RunLock, check_run_name, config_hash, find_run_folder, refresh,
                                            run_prefix)


@dataclass
class RunResult:
    name: str
    outcome: RunOutcome
    results_path: Path
    wandb_dir: str | None
    skipped: bool = False  # finished before: nothing ran, the outcome is read from results.json


def show_progress(setting) -> bool:
    return sys.stderr.isatty() if setting == "auto" else bool(setting)


def build_stream_from(cfg: DictConfig):
    b = cfg.benchmark
    stream = build_stream(
        dataset=b.dataset, kind=b.kind, n_experiences=b.n_experiences, seed=cfg.seed, scenario=b.scenario,
        root=b.root, download=b.download,
        fixed_class_order=list(b.fixed_class_order) if b.fixed_class_order is not None else None,
        rotations=list(b.rotations) if b.rotations is not None else None,
        train_per_experience=b.train_per_experience,
    )
    return subsample_test(stream, b.test_per_experience, cfg.seed)


def morph_plugins(cfg: DictConfig) -> list[Plugin]:
    """``cfg.morph.schedule`` as a plugin (or none)."""
    if not cfg.morph.schedule:
        return []
    steps = [MorphStep.from_config(to_dict(entry)) for entry in cfg.morph.schedule]
    return [MorphPlugin(steps, cfg.morph.every_n_steps, cfg.train.eval_batch_size, probe_size=cfg.morph.probe_size,
                        train_mode_gap=cfg.morph.train_mode_gap)]


def plan_run_folder(cfg: DictConfig) -> RunFolder:
    """The run's folder from its resolved config (see ``tracking.run_folder``)."""
    check_run_name(cfg.run_name)
    resolved = to_dict(cfg)
    return find_run_folder(Path(cfg.output_dir), run_prefix(resolved), config_hash(resolved), bool(cfg.resume))


def outcome_from_results(data: dict) -> RunOutcome:
    R, b = np.asarray(data["R"], dtype=float), np.asarray(data["b"], dtype=float)
    T = len(b)
    full = np.full((T, T), np.nan)
    full[: len(R)] = R
    return RunOutcome(R=full, b=b, records=[ExperienceRecord.from_dict(e) for e in data["experiences"]],
                      status=data.get("status", "completed"), reason=data.get("reason"))


def _finished(folder: RunFolder) -> RunResult:
    """A run that finished before: nothing runs, its outcome is read back from results.json."""
    data = load_results(folder.results)
    return RunResult(folder.path.name, outcome_from_results(data), folder.results, data.get("wandb_dir"), skipped=True)


def run_continual(cfg: DictConfig, plugins: list[Plugin] | None = None, overrides: list[str] | None = None,
                  command: list[str] | None = None, sweep: dict | None = None) -> RunResult:
    """Train ``cfg.strategy`` on ``cfg.benchmark``; returns once results.json and the W&B run are closed.

    A finished run is not run again (``skipped``); an unfinished one resumes from its checkpoint.
    On failure or interruption results.json keeps every finished experience and records how the run
    ended, the checkpoint keeps the last finished experience, and the exception propagates.
    ``sweep`` (the sweep's name and this run's labels in it) is recorded in results.json.
    """
    validate(cfg)
    folder = plan_run_folder(cfg)
    if folder.state == "finished":
        return _finished(folder)
    try:
        lock = RunLock(folder.path).acquire()
    except OSError as e:
        raise ConfigError(f"Cannot create the run folder {folder.path} ({e.strerror or e}); "
                          "choose a writable folder with output_dir=PATH.") from None
    try:
        for tmp in folder.path.glob(TMP_PREFIX + "*"):  # half-written files of a killed process: never read
            tmp.unlink(missing_ok=True)
        folder = refresh(folder)  # again, under the lock: another process may have finished it meanwhile
        if folder.state == "finished":
            return _finished(folder)
        # torch's thread count changes the order of floating-point sums, hence R: set it for this
        # run only, so that no run inherits the count an earlier run in the process left behind.
        threads = torch.get_num_threads()
        try:
            if cfg.train.threads:
                torch.set_num_threads(int(cfg.train.threads))
            return _run(cfg, folder, list(plugins or []), overrides, command or list(sys.argv), sweep)
        finally:
            torch.set_num_threads(threads)
    finally:
        lock.release()


def _run(cfg: DictConfig, folder: RunFolder, extra: list[Plugin], overrides: list[str] | None,
         command: list[str], sweep: dict | None) -> RunResult:
    stream = build_stream_from(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    t = cfg.train
    optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay, t.lr_schedule, t.lr_decay)
    module = build_strategy(to_dict(cfg.strategy), net, optim, t.batch_size, cfg.seed)
    resume = load_checkpoint(folder.checkpoint) if folder.state == "resume" else None

    run_dir, name = folder.path, folder.path.name
    resolved = to_dict(cfg)
    logger = wandb_run.make_wandb_logger(cfg.logger.mode, cfg.logger.project, name, run_dir, resolved,
                                         cfg.logger.entity, list(cfg.logger.tags), run_id=folder.wandb_id,
                                         group=cfg.logger.group)
    wandb_dir = wandb_run.run_dir(logger)
    log = None
    if logger is not None:
        skip = wandb_run.logged_before(run_dir / "wandb", folder.wandb_id, wandb_dir) if resume else {}
        log = wandb_run.WandbLog(logger, skip)
    device = pick_device(t.accelerator)
    header = {
        "name": name, "config": resolved, "seed": cfg.seed, "config_hash": folder.hashed,
        "versions": package_versions(), "git": git_commit(), "runtime": runtime(device),
        "stream": {"name": stream.name, "kind": stream.kind, "scenario": stream.scenario,
                   "n_experiences": stream.n_experiences, "class_order": stream.class_order,
                   "classes": [e.classes for e in stream.train], "task_labels": [e.task_label for e in stream.train],
                   "train_sizes": [len(e.y) for e in stream.train], "test_sizes": [len(e.y) for e in stream.test]},
        "model": {"name": cfg.model.name, "widths": list(module.net.widths),
                  "parameters": sum(p.numel() for p in module.net.parameters())},
        "wandb_dir": wandb_dir, "wandb_id": None if logger is None else folder.wandb_id,
        "sweep": sweep,
    }
    attempt = {"command": command, "overrides": list(overrides) if overrides is not None else None,
               "git": header["git"], "runtime": header["runtime"], "wandb_dir": wandb_dir}
    settings = RunSettings(run_dir=run_dir, eval_batch_size=t.eval_batch_size, probe_size=cfg.morph.probe_size,
                           train_mode_gap=cfg.morph.train_mode_gap, morph_every_n_steps=cfg.morph.every_n_steps)
    # The strategy's plugins run before the recorders, which write what those plugins add.
    plugins = [*extra, *morph_plugins(cfg), *module.plugins(settings),
               ResultsRecorder(folder.results, header, attempt), WandbRecorder(log)]
    progress = show_progress(t.progress_bar)
    runner = ContinualRunner(
        stream, module, plugins, epochs=t.epochs, batch_size=t.batch_size, seed=cfg.seed,
        eval_batch_size=t.eval_batch_size, lca_beta=cfg.metrics.lca_beta,
        curve_every_n_steps=cfg.metrics.curve_every_n_steps, stability_every_n_steps=cfg.metrics.stability_every_n_steps,
        log_fn=None if log is None else log.metrics, log_every_n_steps=cfg.metrics.log_every_n_steps,
        data_seed_offset=cfg.train.data_seed_offset,
        trainer_kwargs={"accelerator": t.accelerator, "devices": 1, "deterministic": t.deterministic,
                        "enable_progress_bar": progress, "default_root_dir": str(run_dir),
                        "logger": logger if logger is not None else False},
        checkpoint=lambda state: save_checkpoint(state, folder.checkpoint),
    )
    outcome = runner.run(resume=resume)
    return RunResult(name, outcome, folder.results, wandb_dir)
