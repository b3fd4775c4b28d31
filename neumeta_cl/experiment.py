"""Named experiments: a sweep in ``experiments/`` whose table goes in the README.

An experiment file is a sweep file (``neumeta_cl.sweep.plan``) that may also say how its table
looks (``table: {rows, cols, metrics}``), what ``--quick`` changes, and where the reference
numbers of ``neumeta-cl reproduce --check`` are. Its runs go to ``<out>/<experiment name>/``;
rerunning it skips the finished runs and resumes the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neumeta_cl.config import experiment_choices
from neumeta_cl.errors import ConfigError, UserError
from neumeta_cl.paths import experiments_dir
from neumeta_cl.report import table as tables
from neumeta_cl.report.runs import Run
from neumeta_cl.run import RunResult, outcome_from_results
from neumeta_cl.sweep.controller import SweepOutcome, run_sweep
from neumeta_cl.sweep.plan import SweepSpec, load_spec, with_seeds
from neumeta_cl.tracking.results import load_results, write_json_atomic


def load_experiment(name_or_path: str) -> SweepSpec:
    try:
        return load_spec(name_or_path, where=(experiments_dir(),))
    except ConfigError as e:
        if str(e).startswith("Unknown sweep"):
            raise ConfigError(f"Unknown experiment '{name_or_path}'; valid experiments are: "
                              f"{', '.join(experiment_choices())}.") from None
        raise


def experiment_dict(name: str) -> dict:
    """The experiment's YAML as plain data (studies that keep their own settings in it, e.g. ``paths``)."""
    import yaml

    return yaml.safe_load(load_experiment(name).source.read_text())


class RunsFailed(UserError):
    """Some runs of an experiment did not finish; the others are kept, and a rerun resumes them."""

    exit_code = 1


@dataclass
class ExperimentResult:
    name: str
    out_dir: Path
    runs: dict[str, list[RunResult]]  # finished runs by label
    table: tables.Table
    sweep: SweepOutcome

    @property
    def summary(self):
        """The table as a pandas DataFrame: ``<metric>_mean``, ``_std``, ``_n`` per label."""
        return self.table.frame()

    @property
    def table_markdown(self) -> str:
        return tables.markdown(self.table)


def experiment_table(spec: SweepSpec, outcome: SweepOutcome) -> tables.Table:
    """The experiment's table from its finished runs' results.json, in the sweep's order."""
    runs, missing = [], []
    for p in outcome.planned:
        r = outcome.results.get(p.job.index)
        path = Path(r.results) if r and r.results else p.folder.results
        if path.exists():
            runs.append(Run(path, load_results(path)))
        else:
            missing.append(p)
    table_spec = spec.table or {}
    rows = spec.row_keys
    label_of = {id(run): tuple(run.labels.get(k) or run.value(k) for k in rows) for run in runs}
    return tables.build(runs, rows, table_spec.get("cols") or [], table_spec.get("metrics") or tables.DEFAULT_METRICS,
                        title=spec.description or spec.name, row_of=lambda run: label_of[id(run)])


def run_experiment(name_or_path: str | SweepSpec, extra_overrides: list[str] | None = None, out_root: str = "runs",
                   seeds: list[int] | None = None, launcher: list[str] | None = None, console=None,
                   command: list[str] | None = None, raise_on_failure: bool = True) -> ExperimentResult:
    """Run every run of the experiment (``seeds`` replaces its seeds) and build its table.

    With ``raise_on_failure``, runs that did not finish raise ``RunsFailed`` after the others are done.
    """
    spec = name_or_path if isinstance(name_or_path, SweepSpec) else load_experiment(name_or_path)
    if seeds:
        spec = with_seeds(spec, list(seeds))
    outcome = run_sweep(spec, list(extra_overrides or []), list(launcher or []), out_root, console=console,
                        command=command)
    table = experiment_table(spec, outcome)
    runs: dict[str, list[RunResult]] = {}
    for p in outcome.planned:
        r = outcome.results.get(p.job.index)
        if r is not None and r.status in ("done", "skipped"):
            data = load_results(r.results)
            runs.setdefault(p.job.label, []).append(
                RunResult(Path(r.results).parent.name, outcome_from_results(data), Path(r.results), data.get("wandb_dir"),
                          skipped=r.status == "skipped"))
    out_dir = outcome.sweep_dir
    write_json_atomic(out_dir / "summary.json", {
        "experiment": spec.name, "description": spec.description,
        "convention": tables.footnote(table),
        "runs": {label: [str(r.results_path) for r in rs] for label, rs in runs.items()},
        "table": table.frame().reset_index().to_dict(orient="records"),
    })
    tables.write_all(table, out_dir)
    result = ExperimentResult(spec.name, out_dir, runs, table, outcome)
    if raise_on_failure and outcome.exit_code:
        failed = [f"{r.index}: {r.status} ({r.reason})" for r in outcome.failed]
        raise RunsFailed(f"{len(outcome.planned) - sum(map(len, runs.values()))} of the experiment's runs did not "
                         f"finish ({'; '.join(failed) or 'stopped'}); see {out_dir / 'sweep.json'} and rerun to resume.")
    return result
