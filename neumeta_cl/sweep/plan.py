"""A sweep's plan: every run it holds, labelled by its axes, validated before anything trains.

A sweep is fixed overrides plus *axes*; its runs are the Cartesian product of the axes' values.
It comes from the command line in Hydra's multirun syntax (``strategy=naive,ewc seed=range(5)``)
or from a YAML file (``configs/sweep/NAME.yaml``, or a named experiment in ``experiments/``)::

    name: lr_sweep
    description: one line for the table title
    overrides: [benchmark=split_digits]          # every run
    axes:
      strategy: [naive, ewc]                     # values of a key: strategy=naive, strategy=ewc
      train.lr: "0.01,0.05"                      # Hydra sweep syntax works too, e.g. "range(5)"
      scenario:                                  # labelled: label -> overrides
        class_il: [benchmark.scenario=class]
        task_il: [benchmark.scenario=task]
      seed: range(3)
    exclude: [{scenario: class_il, strategy: ewc}]   # combinations (by label) left out
    table: {rows: [strategy], cols: [scenario], metrics: [acc, bwt, forgetting]}
    quick: {overrides: [benchmark=split_digits], axes: {seed: [0]}}   # what --quick changes

``strategies``, ``variants`` and ``seeds`` are shorthands for the axes ``strategy``, ``variant``
and ``seed`` (``variants`` first), the format named experiments have always had.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from neumeta_cl.errors import ConfigError
from neumeta_cl.paths import config_dir, experiments_dir

SPEC_KEYS = {"name", "description", "overrides", "axes", "strategies", "variants", "seeds", "exclude", "table",
             "quick", "reference", "study", "landscape"}  # landscape: the loss-landscape study's settings (paths.yaml)
QUICK_KEYS = {"overrides", "axes", "seeds", "description"}


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[tuple[str, tuple[str, ...]], ...]  # (label, overrides) per value

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.values]

    def overrides_of(self, label: str) -> list[str]:
        return list(dict(self.values)[label])


@dataclass
class SweepSpec:
    name: str
    overrides: list[str] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    description: str | None = None
    table: dict | None = None
    quick: dict | None = None
    reference: str | None = None  # a JSON file of reference numbers (``neumeta-cl reproduce --check``)
    source: Path | None = None
    study: str | None = None  # a module of neumeta_cl.studies that makes this table itself (with baselines)

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if a.name == name:
                return a
        raise ConfigError(f"Sweep '{self.name}' has no axis '{name}'; its axes are: {', '.join(a.name for a in self.axes)}.")

    @property
    def row_keys(self) -> list[str]:
        """What a table's rows are: the ``table.rows`` given, else every axis but the seed."""
        rows = (self.table or {}).get("rows")
        if rows:
            return [rows] if isinstance(rows, str) else list(rows)
        return [a.name for a in self.axes if a.name != "seed"]


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its position, labels (axis -> label) and the overrides that make it."""

    index: int
    labels: dict
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        """The labels of every axis but the seed, joined with '/': what a table row shows."""
        return "/".join(v for k, v in self.labels.items() if k != "seed") or "run"

    @property
    def run_name(self) -> str:
        parts = [f"s{v}" if k == "seed" else v for k, v in self.labels.items()]
        name = "-".join(parts).replace("[", "").replace("]", "").replace(",", "x")  # [128,128] -> 128x128
        name = re.sub(r"[^A-Za-z0-9._+=-]", "_", name)
        return re.sub(r"^[^A-Za-z0-9]+", "", name) or "run"  # a folder name starts with a letter or digit


# -- building a spec -------------------------------------------------------------------------------

def _axis_from_values(name: str, values) -> Axis:
    """``[a, b]`` or a Hydra sweep string (``a,b``, ``range(3)``) -> key=value per value."""
    if isinstance(values, str):
        values = _sweep_values(f"{name}={values}")
    elif isinstance(values, (int, float)):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"Axis '{name}' has no values; give a list, a mapping of label -> overrides, "
                          "or a sweep such as range(3).")
    return Axis(name, tuple((_text(v), (f"{name}={_text(v)}",)) for v in values))


def _text(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def seeds_of(text: str) -> list[int]:
    """``0,1,2`` or ``range(5)`` -> the seeds (``--seeds``)."""
    try:
        return [int(label) for label in _axis_from_values("seed", text).labels]
    except ValueError:
        raise ConfigError(f"--seeds must be integers such as 0,1,2 or range(5), got {text!r}.") from None


def _axis(name: str, values) -> Axis:
    if isinstance(values, dict):
        if not values:
            raise ConfigError(f"Axis '{name}' has no values.")
        return Axis(name, tuple((str(label), tuple(_text(o) for o in (ov or []))) for label, ov in values.items()))
    return _axis_from_values(name, values)


def _sweep_values(override: str) -> list[str]:
    """The values of one Hydra sweep override (``key=a,b``, ``key=range(5)``, ``key=choice(a,b)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
        return list(parsed.sweep_string_iterator()) if parsed.is_sweep_override() else [parsed.get_value_element_as_str()]
    except (HydraException, ValueError) as e:
        raise ConfigError(f"Cannot read the sweep '{override}': {str(e).splitlines()[0]}; "
                          "write values as a,b,c or range(start, stop[, step]).") from None


def from_multirun(args: list[str], name: str | None = None) -> SweepSpec:
    """``strategy=naive,ewc seed=range(3) train.epochs=2`` -> a spec with two axes and one fixed override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(args))
    except (HydraException, ValueError) as e:
        raise ConfigError(f"Cannot read the overrides {' '.join(args)}: {str(e).splitlines()[0]}.") from None
    fixed, axes = [], []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            if o.value_type is not None and o.value_type.name in ("INTERVAL_SWEEP", "GLOB_CHOICE_SWEEP"):
                raise ConfigError(f"'{o.input_line}' is not a list of runs; write the values out (a,b,c) "
                                  "or use range(start, stop[, step]).")
            axes.append(Axis(key.lstrip("+"), tuple((v, (f"{key}={v}",)) for v in o.sweep_string_iterator())))
        else:
            fixed.append(o.input_line)
    digest = hashlib.sha256("\n".join(args).encode()).hexdigest()[:8]
    return SweepSpec(name=name or f"multirun-{digest}", overrides=fixed, axes=axes)


def sweep_choices() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml"))


def find_spec_file(name_or_path: str, where: tuple[Path, ...] | None = None) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    where = where or (config_dir() / "sweep", experiments_dir())
    for folder in where:
        candidate = folder / f"{name_or_path.removesuffix('.yaml')}.yaml"
        if candidate.exists():
            return candidate
    names = sorted({p.stem for folder in where for p in folder.glob("*.yaml")})
    raise ConfigError(f"Unknown sweep '{name_or_path}'; valid names are: {', '.join(names)}.")


def load_spec(name_or_path: str, where: tuple[Path, ...] | None = None) -> SweepSpec:
    path = find_spec_file(name_or_path, where)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{line}: {getattr(e, 'problem', e)}; "
                          "quote list values such as \"model.widths=[256,256]\".") from None
    return spec_from_dict(raw, path)


def spec_from_dict(raw: dict, path: Path | None = None) -> SweepSpec:
    where = path or "the sweep"
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"Unknown key(s) {', '.join(unknown)} in {where}; valid keys are: {', '.join(sorted(SPEC_KEYS))}.")
    if raw.get("quick") is not None and set(raw["quick"]) - QUICK_KEYS:
        bad = ", ".join(sorted(set(raw["quick"]) - QUICK_KEYS))
        raise ConfigError(f"Unknown key(s) {bad} under quick: in {where}; valid keys are: {', '.join(sorted(QUICK_KEYS))}.")
    axes_raw: dict = {}
    if raw.get("variants"):
        axes_raw["variant"] = raw["variants"]
    if raw.get("strategies"):
        axes_raw["strategy"] = raw["strategies"]
    axes_raw.update(raw.get("axes") or {})
    if raw.get("seeds") is not None:
        axes_raw["seed"] = raw["seeds"]
    if not any(k != "seed" for k in axes_raw) and not raw.get("overrides"):
        raise ConfigError(f"{where} lists no runs; add `axes:` (or a `strategies:` mapping of label -> overrides).")
    axes_raw.setdefault("seed", [0])
    name = raw.get("name") or (path.stem if path else "sweep")
    return SweepSpec(name=str(name), overrides=[_text(o) for o in raw.get("overrides") or []],
                     axes=[_axis(k, v) for k, v in axes_raw.items()], exclude=list(raw.get("exclude") or []),
                     description=raw.get("description"), table=raw.get("table"), quick=raw.get("quick"),
                     reference=raw.get("reference"), source=path, study=raw.get("study"))


def quick_variant(spec: SweepSpec) -> SweepSpec:
    """The spec with its ``quick:`` changes applied: overrides appended, axes replaced."""
    if not spec.quick:
        raise ConfigError(f"Sweep '{spec.name}' has no quick variant; run it without --quick.")
    axes = {a.name: a for a in spec.axes}
    quick_axes = dict(spec.quick.get("axes") or {})
    if spec.quick.get("seeds") is not None:
        quick_axes["seed"] = spec.quick["seeds"]
    for name, values in quick_axes.items():
        axes[name] = _axis(name, values)
    return SweepSpec(name=f"{spec.name}-quick", overrides=[*spec.overrides, *map(_text, spec.quick.get("overrides") or [])],
                     axes=list(axes.values()), exclude=spec.exclude,
                     description=spec.quick.get("description") or spec.description, table=spec.table,
                     quick=None, reference=None, source=spec.source)


def with_seeds(spec: SweepSpec, seeds: list[int]) -> SweepSpec:
    axes = [a for a in spec.axes if a.name != "seed"] + [_axis("seed", list(seeds))]
    return SweepSpec(**{**spec.__dict__, "axes": axes})


# -- expanding and validating ----------------------------------------------------------------------

def _excluded(labels: dict, exclude: list[dict]) -> bool:
    return any(all(str(labels.get(k)) == str(v) for k, v in rule.items()) for rule in exclude)


def expand(spec: SweepSpec, extra: list[str] | tuple[str, ...] = ()) -> list[Job]:
    """Every run of the sweep, in axis order (the last axis varies fastest)."""
    jobs = []
    for combo in itertools.product(*(a.values for a in spec.axes)):
        labels = {a.name: label for a, (label, _) in zip(spec.axes, combo)}
        if _excluded(labels, spec.exclude):
            continue
        overrides = [*spec.overrides, *(o for _, ovs in combo for o in ovs), *extra]
        jobs.append(Job(len(jobs), labels, tuple(overrides)))
    return jobs


@dataclass
class PlannedRun:
    job: Job
    cfg: object  # the resolved DictConfig
    folder: object  # its RunFolder: where the run lives (or will), and whether it finished


def validate(jobs: list[Job], run_overrides) -> list[PlannedRun]:
    """Resolve every job's config; report every bad one at once (one ``ConfigError``), or return the plan.

    ``run_overrides(job)`` gives the overrides a job runs with (the sweep adds its output folder,
    run name and W&B group). Two jobs that resolve to the same run are a bad combination too.
    """
    from neumeta_cl.config import load
    from neumeta_cl.run import plan_run_folder

    planned, problems, seen = [], [], {}
    for job in jobs:
        try:
            cfg = load(run_overrides(job))
            folder = plan_run_folder(cfg)
        except ConfigError as e:
            problems.append(f"{_describe(job)}: {e}")
            continue
        if folder.path in seen:
            problems.append(f"{_describe(job)}: the same run as {_describe(seen[folder.path])} (same resolved config); "
                            "drop one of the duplicate values.")
            continue
        seen[folder.path] = job
        planned.append(PlannedRun(job, cfg, folder))
    if problems:
        head = f"{len(problems)} of the sweep's {len(jobs)} runs cannot start; fix them and rerun (nothing was trained):"
        raise ConfigError("\n  ".join([head, *problems]))
    return planned


def _describe(job: Job) -> str:
    return ", ".join(f"{k}={v}" for k, v in job.labels.items()) or f"run {job.index}"
