"""A reviewer's one command: ``neumeta-cl reproduce TABLE --check`` (``make test`` ends with table1 --quick)."""

from __future__ import annotations

import json

import pytest

from neumeta_cl.cli import main
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


TINY = """name: tiny
description: split digits · naive and replay · seed 0
overrides: [benchmark=split_digits, benchmark.n_experiences=5, "model.widths=[32]", train.epochs=2, logger.mode=disabled]
strategies:
  naive: [strategy=naive]
  replay: [strategy=replay, strategy.buffer_size=100]
seeds: [0]
"""


def test_reproduce_writes_checks_and_rejects_a_reference(tmp_path, capsys, monkeypatch):
    """The reviewer's loop on a two-run table: write a reference, check it (yes), check a wrong one (no,
    exit 1), and a maintainer's rewrite keeps the reference's floor and note."""
    experiments = tmp_path / "experiments"
    (experiments / "reference").mkdir(parents=True)
    (experiments / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("NEUMETA_CL_EXPERIMENTS_DIR", str(experiments))
    out_dir = str(tmp_path / "runs")
    assert main(["reproduce", "tiny", "--check", "--out", out_dir]) == 2
    assert "No reference numbers for 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before any run

    assert main(["reproduce", "tiny", "--write-reference", "--out", out_dir]) == 0
    ref_path = experiments / "reference" / "tiny.json"
    reference = json.loads(ref_path.read_text())
    assert reference["command"] == "neumeta-cl reproduce tiny"
    assert {(c["row"], c["metric"]) for c in reference["cells"]} >= {("naive", "acc"), ("replay", "acc"), ("replay", "bwt")}
    results = sorted((tmp_path / "runs" / "tiny").rglob("results.json"))
    assert len(results) == 2
    naive = next(json.loads(r.read_text()) for r in results if "naive" in str(r))
    cell = next(c for c in reference["cells"] if (c["row"], c["metric"]) == ("naive", "acc"))
    assert cell["mean"] == pytest.approx(naive["metrics"]["acc"]) and cell["n"] == 1

    capsys.readouterr()
    assert main(["reproduce", "tiny", "--check", "--out", out_dir]) == 0  # the finished runs are reused
    n = len(reference["cells"])
    assert f"check: {n} of {n} cells agree" in capsys.readouterr().out

    bad = dict(reference, floor=0.01, note="kept", cells=[dict(c) for c in reference["cells"]])
    bad["cells"][0]["mean"] += 0.2
    ref_path.write_text(json.dumps(bad))
    assert main(["reproduce", "tiny", "--check", "--out", out_dir]) == 1
    out = capsys.readouterr().out
    assert f"check: {n - 1} of {n} cells agree" in out and "; 1 do not" in out

    assert main(["reproduce", "tiny", "--write-reference", "--out", out_dir]) == 0
    rewritten = json.loads(ref_path.read_text())
    assert [c["mean"] for c in rewritten["cells"]] == [c["mean"] for c in reference["cells"]]
    assert (rewritten["floor"], rewritten["note"]) == (0.01, "kept")


@pytest.mark.slow  # about 4 minutes; CI runs the same command as the last step of `make test`
def test_reproduce_table1_quick_matches_the_committed_reference(tmp_path, capsys):
    assert reference_path("table1-quick").exists()
    code = main(["reproduce", "table1", "--quick", "--check", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "strategy" in out and "prune_grow" in out and "neumeta" in out and "split_task" in out
    reference = json.loads(reference_path("table1-quick").read_text())
    assert f"check: {len(reference['cells'])} of {len(reference['cells'])} cells agree" in out
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "table1-quick" / f"table.{ext}").exists()


def test_reproduce_takes_launcher_settings_only(capsys):
    assert main(["reproduce", "table1", "train.epochs=9", "--quick"]) == 2
    assert "reproduce takes launcher settings only" in capsys.readouterr().err
    assert main(["reproduce", "tabel1"]) == 2
    assert "Unknown experiment 'tabel1'; valid experiments are:" in capsys.readouterr().err
