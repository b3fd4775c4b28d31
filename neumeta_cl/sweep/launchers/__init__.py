"""Launchers run a sweep's jobs: ``local`` worker processes, ``slurm`` (submitit) or ``ray``.

A launcher has ``run(jobs, on_start, on_done, stop)``: ``jobs`` are ``(JobSpec, threads)``,
``on_start(spec)`` / ``on_done(JobResult)`` report progress, and ``stop()`` returns a signal number
when the sweep should stop. Its settings come from ``configs/launcher/<name>.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from neumeta_cl.errors import ConfigError
from neumeta_cl.paths import config_dir


def launcher_choices() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "launcher").glob("*.yaml"))


def load_launcher_config(overrides: list[str]) -> DictConfig:
    """``launcher=NAME`` and ``launcher.KEY=VALUE`` overrides -> the launcher's config."""
    name = "local"
    keys = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "launcher":
            name = value
        else:
            keys.append(f"{key.removeprefix('launcher.')}={value}")
    path = config_dir() / "launcher" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"Unknown launcher '{name}'; valid launchers are: {', '.join(launcher_choices())}.")
    cfg = OmegaConf.load(path)
    OmegaConf.set_struct(cfg, True)
    for item in keys:
        key = item.split("=", 1)[0]
        if key not in cfg:
            raise ConfigError(f"Unknown key launcher.{key} for launcher={name}; valid keys are: "
                              f"{', '.join(k for k in cfg if k != 'name')}.")
        try:
            if isinstance(cfg[key], DictConfig):  # an open mapping (slurm's `additional`): any sbatch key
                with open_dict(cfg):
                    cfg.merge_with_dotlist([item])
            else:
                cfg.merge_with_dotlist([item])
        except Exception as e:
            raise ConfigError(f"Invalid launcher.{item}: {str(e).splitlines()[0]}.") from None
    return cfg


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _positive_int(cfg: DictConfig, key: str, allow_none: bool = True, allow_zero: bool = False) -> None:
    v = cfg[key]
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"launcher.{key} must be a {kind} integer, got {v!r}.")


def build_launcher(cfg: DictConfig, sweep_dir: Path):
    """The launcher and the default torch thread count of each run."""
    if cfg.name == "local":
        from neumeta_cl.sweep.launchers.local import LocalLauncher

        _positive_int(cfg, "workers")
        _positive_int(cfg, "cores")
        n_cores = cfg.cores or cores()
        workers = cfg.workers or n_cores
        return LocalLauncher(workers, n_cores), max(1, n_cores // workers)
    if cfg.name == "ray":
        from neumeta_cl.sweep.launchers.ray import RayLauncher

        _positive_int(cfg, "cpus_per_run", allow_none=False)
        _positive_int(cfg, "num_cpus")
        _positive_int(cfg, "max_retries", allow_none=False, allow_zero=True)
        return RayLauncher(cfg.address, cfg.num_cpus, float(cfg.gpus_per_run), cfg.max_retries), cfg.cpus_per_run
    if cfg.name == "slurm":
        from neumeta_cl.sweep.launchers.slurm import SlurmLauncher

        for key in ("time_min", "mem_gb", "cpus_per_task", "array_parallelism"):
            _positive_int(cfg, key, allow_none=False)
        params = {"timeout_min": cfg.time_min, "mem_gb": cfg.mem_gb, "cpus_per_task": cfg.cpus_per_task,
                  "gpus_per_node": cfg.gpus_per_node, "slurm_array_parallelism": cfg.array_parallelism,
                  "slurm_signal_delay_s": cfg.signal_delay_s,
                  "slurm_partition": cfg.partition,
                  "slurm_additional_parameters": OmegaConf.to_container(cfg.additional)}
        if cfg.cluster == "local":  # submitit's local executor takes none of the sbatch parameters
            params = {"timeout_min": cfg.time_min}
        elif cfg.partition is None:
            params.pop("slurm_partition")
        return SlurmLauncher(sweep_dir / "submitit", cfg.cluster, params, max_requeues=cfg.max_requeues), cfg.cpus_per_task
    raise ConfigError(f"Unknown launcher '{cfg.name}'; valid launchers are: {', '.join(launcher_choices())}.")
