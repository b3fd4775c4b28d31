"""``neumeta-cl reproduce TABLE``: run the committed sweep behind a README table and print the table.

With ``--check`` each mean is compared with the reference numbers committed from the run that made
the README (``experiments/reference/<name>.json``): a cell passes when it is within ``tolerance``
reference standard deviations of the reference mean, or within ``floor`` when the reference has
one seed or no spread (float sums differ between CPUs, so bitwise equality is not the test).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

from neumeta_cl.errors import UserError
from neumeta_cl.experiment import load_experiment, run_experiment
from neumeta_cl.paths import experiments_dir
from neumeta_cl.report import table as tables
from neumeta_cl.report.stats import within
from neumeta_cl.sweep.plan import quick_variant
from neumeta_cl.tracking.atomic import write_json_atomic
from neumeta_cl.tracking.provenance import git_commit

TOLERANCE_STD = 2.0  # a mean within 2 reference stds
TIMINGS = {"train_seconds", "seconds_to_95", "morph_ms"}  # depend on the machine: shown, never checked
FLOOR = 0.01  # ... or within 0.01 (1 accuracy point) when the reference has no spread


def reference_path(name: str) -> Path:
    return experiments_dir() / "reference" / f"{name}.json"


def reference_of(table: tables.Table, command: str) -> dict:
    cells = []
    for (row, col, metric), c in table.cells.items():
        if metric in TIMINGS:
            continue
        cells.append({"row": "/".join(row), "col": "/".join(col), "metric": metric, "mean": c.mean,
                      "std": None if math.isnan(c.std) else c.std, "n": c.n})
    return {"command": command, "git": git_commit(), "made": _dt.date.today().isoformat(),
            "tolerance_std": TOLERANCE_STD, "floor": FLOOR,
            "metrics": [m for m in table.metrics if m not in TIMINGS], "cells": cells}


def check(table: tables.Table, reference: dict, tolerance: float | None = None) -> list[dict]:
    """One verdict per reference cell: ours, the reference, the allowed distance, and yes/no."""
    tol = reference.get("tolerance_std", TOLERANCE_STD) if tolerance is None else tolerance
    floor = reference.get("floor", FLOOR)
    ours = {("/".join(r), "/".join(c), m): cell for (r, c, m), cell in table.cells.items()}
    verdicts = []
    for ref in reference["cells"]:
        cell = ours.get((ref["row"], ref["col"], ref["metric"]))
        std = ref["std"] if ref["std"] is not None else math.nan
        ok = cell is not None and within(cell.mean, ref["mean"], std, tol, floor)
        verdicts.append({**ref, "ours": None if cell is None else cell.mean,
                         "allowed": max(tol * (0.0 if math.isnan(std) else std), floor), "ok": ok})
    return verdicts


def _check_table(verdicts: list[dict]):
    from rich.table import Table

    t = Table(title="check against the committed reference")
    for col in ("row", "col", "metric", "reference", "ours", "allowed ±", "ok"):
        t.add_column(col, justify="left" if col in ("row", "col", "metric") else "right")
    for v in verdicts:
        ref = f"{v['mean']:.4f}" + (f" ± {v['std']:.4f}" if v["std"] is not None else "")
        t.add_row(v["row"], v["col"] or "-", v["metric"], ref, "-" if v["ours"] is None else f"{v['ours']:.4f}",
                  f"{v['allowed']:.4f}", "[green]yes[/]" if v["ok"] else "[red]no[/]")
    return t


def reproduce(name: str, quick: bool = False, check_reference: bool = False, launcher: list[str] | None = None,
              out_root: str = "runs", tolerance: float | None = None, write_reference: bool = False) -> int:
    from neumeta_cl.sweep.progress import stderr_console

    spec = load_experiment(name)
    ref_path = reference_path(spec.name + ("-quick" if quick else ""))
    if check_reference and not write_reference and not ref_path.exists():  # say so before hours of runs
        raise UserError(f"No reference numbers for '{ref_path.stem}' ({ref_path}); run without --check.")
    console = tables.console()
    command = f"neumeta-cl reproduce {name}" + (" --quick" if quick else "")
    if spec.study:
        made, code = _study(spec, quick, out_root, console)
        return _verify(made, code, spec.name + ("-quick" if quick else ""), command, check_reference, tolerance,
                       write_reference, console)
    if quick:
        spec = quick_variant(spec)
    res = run_experiment(spec, ["train.progress_bar=false"], out_root, launcher=launcher, console=stderr_console(),
                         command=command.split(), raise_on_failure=False)
    from neumeta_cl.sweep.controller import print_summary

    print_summary(res.sweep, stderr_console())
    console.print(tables.rich_table(res.table))
    for line in tables.left_out_lines(res.table):
        console.print(line)
    console.print(f"table: {res.out_dir / 'table.md'} (also .tex, .csv)")
    return _verify(res.table, res.sweep.exit_code, spec.name, command, check_reference, tolerance, write_reference,
                   console)


def _study(spec, quick: bool, out_root: str, console) -> tuple[tables.Table, int]:
    """A table a study makes itself (``neumeta_widths``: NeuMeta against individually trained networks)."""
    import importlib

    study = importlib.import_module(f"neumeta_cl.studies.{spec.study}")
    saved, out = study.run_seeds(out_root=out_root, quick=quick)
    figs = study.summarise(saved)
    console.print(study.render(figs))
    console.print(f"results: {out}")
    made = tables.Table(["width"], [], ["acc"], cols=[()], title=spec.description)
    for f, row in sorted(figs["rows"].items(), key=lambda kv: float(kv[0])):
        made.rows.append((f,))
        made.cells[((f,), (), "acc")] = tables.Cell(row["ours"], row["ours_std"] if figs["seeds"] > 1 else math.nan,
                                                    figs["seeds"])
    return made, 0


def _verify(made: tables.Table, code: int, name: str, command: str, check_reference: bool, tolerance: float | None,
            write_reference: bool, console) -> int:
    ref_path = reference_path(name)
    if write_reference:
        if code:
            raise UserError("Not every run finished; a reference needs them all (rerun to resume them).")
        reference = reference_of(made, command)
        if ref_path.exists():  # a maintainer's tolerance, floor and note outlive a new run's numbers
            old = json.loads(ref_path.read_text())
            reference.update({k: old[k] for k in ("tolerance_std", "floor", "note") if k in old})
        write_json_atomic(ref_path, reference)
        console.print(f"reference written: {ref_path}")
    if check_reference:  # ``reproduce`` refused already if there is no reference
        verdicts = check(made, json.loads(ref_path.read_text()), tolerance)
        console.print(_check_table(verdicts))
        misses = sum(not v["ok"] for v in verdicts)
        console.print(f"check: {len(verdicts) - misses} of {len(verdicts)} cells agree with {ref_path}"
                      + ("" if not misses else f"; {misses} do not"))
        code = code or (1 if misses else 0)
    return code
