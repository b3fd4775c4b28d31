"""A reviewer's one command: ``neumeta-cl reproduce table1 --quick --check`` (what CI runs)."""

from __future__ import annotations

import json
import shutil

from neumeta_cl.cli import main
from neumeta_cl.paths import experiments_dir
from neumeta_cl.reproduce import check, reference_path
from neumeta_cl.report.table import Cell, Table


def test_check_compares_means_within_reference_stds_or_the_floor():
    t = Table(["strategy"], [], ["acc"], rows=[("a",), ("b",)], cols=[()],
              cells={(("a",), (), "acc"): Cell(0.80, 0.02, 5), (("b",), (), "acc"): Cell(0.50, float("nan"), 1)})
    ref = {"tolerance_std": 2.0, "floor": 0.01, "cells": [
        {"row": "a", "col": "", "metric": "acc", "mean": 0.83, "std": 0.02, "n": 5},   # 0.03 <= 2 * 0.02
        {"row": "b", "col": "", "metric": "acc", "mean": 0.52, "std": None, "n": 1},   # 0.02 > floor 0.01
        {"row": "c", "col": "", "metric": "acc", "mean": 0.5, "std": None, "n": 1}]}   # a cell we do not have
    assert [v["ok"] for v in check(t, ref)] == [True, False, False]
    assert [v["ok"] for v in check(t, ref, tolerance=1.0)] == [False, False, False]


def test_reproduce_table1_quick_matches_the_committed_reference(tmp_path, capsys, monkeypatch):
    assert reference_path("table1-quick").exists()
    code = main(["reproduce", "table1", "--quick", "--check", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "strategy" in out and "prune_grow" in out and "neumeta" in out and "split_task" in out
    reference = json.loads(reference_path("table1-quick").read_text())
    assert f"check: {len(reference['cells'])} of {len(reference['cells'])} cells agree" in out
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "table1-quick" / f"table.{ext}").exists()

    # A reference that the runs do not match: the check says no and the exit code is 1 (the runs are
    # finished, so this reuses them).
    moved = tmp_path / "experiments"
    shutil.copytree(experiments_dir(), moved)
    bad = json.loads(reference_path("table1-quick").read_text())
    bad["cells"][0]["mean"] += 0.2
    (moved / "reference" / "table1-quick.json").write_text(json.dumps(bad))
    monkeypatch.setenv("NEUMETA_CL_EXPERIMENTS_DIR", str(moved))
    assert main(["reproduce", "table1", "--quick", "--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"check: {len(bad['cells']) - 1} of {len(bad['cells'])} cells agree" in out and "; 1 do not" in out

    # A maintainer's new reference takes the runs' numbers and keeps the reference's floor and note.
    assert main(["reproduce", "table1", "--quick", "--write-reference", "--out", str(tmp_path)]) == 0
    rewritten = json.loads((moved / "reference" / "table1-quick.json").read_text())
    key = lambda c: (c["row"], c["col"], c["metric"])
    assert [key(c) for c in rewritten["cells"]] == [key(c) for c in reference["cells"]]
    assert all(abs(a["mean"] - b["mean"]) <= reference["floor"] for a, b in zip(rewritten["cells"], reference["cells"]))
    assert (rewritten["floor"], rewritten["note"]) == (reference["floor"], reference["note"]) != (0.01, None)


def test_reproduce_takes_launcher_settings_only(capsys):
    assert main(["reproduce", "table1", "train.epochs=9", "--quick"]) == 2
    assert "reproduce takes launcher settings only" in capsys.readouterr().err
    assert main(["reproduce", "tabel1"]) == 2
    assert "Unknown experiment 'tabel1'; valid experiments are:" in capsys.readouterr().err
