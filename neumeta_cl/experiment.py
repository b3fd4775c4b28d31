"""Named experiments: a YAML file in ``experiments/`` pins a set of runs and their table.

Format::

    name: quickstart
    description: one line for the table title
    overrides: [benchmark=split_fmnist, ...]        # applied to every run
    variants: {task_il: [benchmark.scenario=task], class_il: []}   # optional; labels become variant/strategy
    strategies: {naive: [strategy=naive], ewc: [strategy=ewc, strategy.ewc_lambda=100]}
    seeds: [0, 1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from neumeta_cl.config import experiment_choices, experiments_dir, load
from neumeta_cl.errors import ConfigError
from neumeta_cl.report import table
from neumeta_cl.run import RunResult, run_continual
from neumeta_cl.tracking.results import load_results, write_json_atomic

EXPERIMENT_KEYS = {"name", "description", "overrides", "variants", "strategies", "seeds",
                   "landscape"}  # landscape: settings of the loss-landscape study (experiments/paths.yaml)


def load_experiment(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.exists():
        path = experiments_dir() / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if not path.exists():
        raise ConfigError(f"Unknown experiment '{name_or_path}'; valid experiments are: {', '.join(experiment_choices())}.")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"{path} is not valid YAML{line}: {getattr(e, 'problem', e)}; "
                          "quote list values such as \"model.widths=[256,256]\".") from None
    unknown = sorted(set(spec) - EXPERIMENT_KEYS)
    if unknown:
        raise ConfigError(f"Unknown key(s) {', '.join(unknown)} in {path}; valid keys are: {', '.join(sorted(EXPERIMENT_KEYS))}.")
    if not spec.get("strategies"):
        raise ConfigError(f"{path} lists no strategies; add a `strategies:` mapping of label -> overrides.")
    spec.setdefault("name", path.stem)
    spec.setdefault("seeds", [0])
    spec.setdefault("overrides", [])
    return spec


@dataclass
class ExperimentResult:
    name: str
    out_dir: Path
    runs: dict[str, list[RunResult]]
    summary: object  # pandas DataFrame

    @property
    def table_markdown(self) -> str:
        return table.markdown(self.summary)


def plan(spec: dict, extra: list[str]) -> list[tuple[str, int, list[str]]]:
    """(label, seed, overrides) for every run, configs validated before anything trains."""
    runs = []
    variants = spec.get("variants") or {None: []}
    for variant, variant_ov in variants.items():
        for name, overrides in spec["strategies"].items():
            label = name if variant is None else f"{variant}/{name}"
            for seed in spec["seeds"]:
                ov = [*spec["overrides"], *(variant_ov or []), *(overrides or []), f"seed={seed}", *extra]
                load(ov)  # fail fast on a bad config, before hours of training
                runs.append((label, seed, ov))
    return runs


def run_experiment(name_or_path: str, extra_overrides: list[str] | None = None, out_root: str = "runs",
                   on_run_done=None, seeds: list[int] | None = None) -> ExperimentResult:
    """Run every (strategy, seed) of the experiment; ``seeds`` replaces the experiment's own."""
    spec = load_experiment(name_or_path)
    if seeds:
        spec["seeds"] = list(seeds)
    jobs = plan(spec, list(extra_overrides or []))
    # No clock in the name: rerunning the experiment skips its finished runs and resumes the others.
    out_dir = Path(out_root) / spec["name"]
    runs: dict[str, list[RunResult]] = {}
    for label, seed, ov in jobs:
        ov = [*ov, f"output_dir={out_dir}", f"run_name={label.replace('/', '-')}-s{seed}"]
        result = run_continual(load(ov), overrides=ov)
        runs.setdefault(label, []).append(result)
        if on_run_done is not None:
            on_run_done(label, seed, result)
    results = {label: [load_results(r.results_path) for r in rs] for label, rs in runs.items()}
    frame = table.metrics_frame(results)
    summary = table.summary_frame(frame)
    write_json_atomic(out_dir / "summary.json", {
        "experiment": spec["name"], "description": spec.get("description"), "seeds": spec["seeds"],
        "convention": "BWT/FWT average over T-1 experiences (GEM paper); forgetting as Chaudhry et al. 2018",
        "runs": {label: [str(r.results_path) for r in rs] for label, rs in runs.items()},
        "table": summary.reset_index().to_dict(orient="records"),
    })
    (out_dir / "table.md").write_text(table.markdown(summary) + "\n")
    return ExperimentResult(spec["name"], out_dir, runs, summary)
