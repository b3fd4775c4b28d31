"""Tables from results.json: statistics, grouping, bold best, formats, left-out runs; plots; sync."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats

from neumeta_cl.cli import main
from neumeta_cl.report import table
from neumeta_cl.report.runs import find_runs
from neumeta_cl.report.stats import ci95, mean_std


def _results(folder, strategy, bench, seed, acc, forgetting, status="completed", T=3):
    R = np.full((T, T), acc)
    folder.mkdir(parents=True)
    data = {"seed": seed, "status": status, "config": {"strategy": {"name": strategy}, "benchmark": {"name": bench},
                                                        "train": {"lr": 0.01}},
            "R": R.tolist(), "b": [0.1] * T,
            "experiences": [{"index": i, "parameters": 100 + 10 * i, "flops": 200 + 20 * i, "morphs": []} for i in range(T)],
            "metrics": {"acc": acc, "bwt": -forgetting, "forgetting": forgetting, "fwt": 0.0}}
    if status != "completed":
        data["reason"] = "interrupted by SIGTERM"
    (folder / "results.json").write_text(json.dumps(data))


@pytest.fixture
def runs_dir(tmp_path):
    accs = {("naive", "a"): [0.50, 0.60, 0.70], ("ewc", "a"): [0.80, 0.82, 0.90], ("naive", "b"): [0.3, 0.4],
            ("ewc", "b"): [0.2, 0.25]}
    for (strategy, bench), values in accs.items():
        for seed, acc in enumerate(values):
            _results(tmp_path / f"{strategy}-{bench}-{seed}", strategy, bench, seed, acc, forgetting=1 - acc)
    _results(tmp_path / "ewc-a-killed", "ewc", "a", 9, 0.0, 1.0, status="interrupted")
    return tmp_path


def test_mean_sample_std_and_t_interval():
    mean, std, n = mean_std([0.5, 0.6, 0.7, None, float("nan")])
    assert (mean, n) == (pytest.approx(0.6), 3)
    assert std == pytest.approx(np.std([0.5, 0.6, 0.7], ddof=1)) and std == pytest.approx(0.1)
    assert ci95(std, n) == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    assert math.isnan(mean_std([0.4])[1]) and math.isnan(ci95(0.1, 1))


def test_groups_by_any_key_bolds_the_best_and_never_averages_unfinished_runs(runs_dir):
    t = table.build(find_runs([runs_dir]), ["strategy"], ["benchmark"], ["acc", "forgetting"], ci=True)
    assert set(t.rows) == {("naive",), ("ewc",)} and t.cols == [("a",), ("b",)] or t.cols == [("b",), ("a",)]
    cell = t.cell(("ewc",), ("a",), "acc")
    assert cell.n == 3 and cell.mean == pytest.approx(np.mean([0.8, 0.82, 0.9]))  # the killed run is left out
    assert cell.std == pytest.approx(np.std([0.8, 0.82, 0.9], ddof=1))
    best = t.best()
    assert (("ewc",), ("a",), "acc") in best and (("naive",), ("b",), "acc") in best
    assert (("ewc",), ("a",), "forgetting") in best  # lower is better
    assert [r.status for r in t.left_out] == ["interrupted"]
    md = table.markdown(t)
    assert "| strategy | n | a ACC | a Forgetting | b ACC | b Forgetting |" in md or "| strategy | n | b ACC" in md
    assert f"**{cell.mean:.3f} ± {cell.std:.3f} [{cell.mean - cell.ci:.3f}, {cell.mean + cell.ci:.3f}]**" in md
    assert "not averaged:" in md and "status interrupted: interrupted by SIGTERM" in md
    assert "ddof=1" in md and "T-1 experiences (GEM paper" in md and "Chaudhry et al. 2018" in md
    # any config key groups: train.lr is the same for all, so one row
    assert table.build(find_runs([runs_dir]), ["train.lr"], [], ["acc"]).rows == [("0.01",)]


def test_latex_is_booktabs_and_csv_is_long_format(runs_dir):
    t = table.build(find_runs([runs_dir]), ["strategy"], ["benchmark"], ["acc", "forgetting"], title="A_b & c")
    tex = table.latex(t)
    for piece in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){3-4}", r"\textbf{", r"$\pm$",
                  r"\caption{A\_b \& c}", r"\multicolumn{2}{c}{a}"):
        assert piece in tex
    rows = list(csv.DictReader(io.StringIO(table.csv(t))))
    assert len(rows) == 2 * 2 * 2 and set(rows[0]) == {"strategy", "benchmark", "metric", "mean", "std", "n", "ci95", "best"}
    naive_b = next(r for r in rows if r["strategy"] == "naive" and r["benchmark"] == "b" and r["metric"] == "acc")
    assert float(naive_b["mean"]) == pytest.approx(0.35) and naive_b["n"] == "2" and naive_b["best"] == "True"


def test_table_cli_formats_and_bad_input(runs_dir, tmp_path, capsys):
    assert main(["table", str(runs_dir), "--rows", "strategy", "--cols", "benchmark", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("strategy,benchmark,metric,mean,std,n,ci95,best")
    out = tmp_path / "t.tex"
    assert main(["table", str(runs_dir), "--format", "latex", "--output", str(out)]) == 0
    assert r"\toprule" in out.read_text()
    assert main(["table", str(runs_dir), "--metrics", "acc,accuracy"]) == 2
    assert "Unknown metric(s) accuracy; valid metrics are: acc," in capsys.readouterr().err
    assert main(["table", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["table", str(runs_dir), "--rows", "strategy.bufer"]) == 2
    assert "has no 'strategy.bufer' to group by" in capsys.readouterr().err


def test_plots_are_written_as_png_and_pdf(runs_dir, tmp_path):
    from neumeta_cl.report.plots import plot_all

    runs = [r for r in find_runs([runs_dir]) if r.value("benchmark") == "a"]
    written = plot_all(runs, "strategy", ["heatmap", "stream", "size", "width"], tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["heatmap.pdf", "heatmap.png", "size.pdf", "size.png", "stream.pdf", "stream.png"]  # no NeuMeta
    assert all(p.stat().st_size > 5000 for p in written)
    assert main(["plot", str(runs_dir), "--kinds", "pie"]) == 2


def test_sync_lists_offline_runs_and_needs_credentials(tmp_path, capsys, monkeypatch):
    for name in ("offline-run-20260101_000000-a", "offline-run-20260101_000001-b"):
        (tmp_path / "sweep" / "run1" / "wandb" / name).mkdir(parents=True)
    assert main(["sync", str(tmp_path / "sweep"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("offline-run-") == 2 and "2 offline run folder(s) would be uploaded" in out
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert main(["sync", str(tmp_path / "sweep")]) == 2
    assert "W&B has no API key here; run `wandb login`" in capsys.readouterr().err


def test_the_wandb_sweep_example_calls_our_cli_with_valid_overrides():
    import yaml

    from neumeta_cl.config import load
    from neumeta_cl.paths import config_dir

    spec = yaml.safe_load((config_dir() / "wandb_sweep.yaml").read_text())
    assert spec["command"][:3] == ["${env}", "neumeta-cl", "run"] and "${args_no_hyphens}" in spec["command"]
    # what W&B's agent puts in place of ${args_no_hyphens}: key=value for one point of the grid
    point = [f"{k}={v['values'][0]}" for k, v in spec["parameters"].items()]
    fixed = [a for a in spec["command"][3:] if not a.startswith("${")]
    cfg = load([*fixed, *point])
    assert cfg.strategy.name == "naive" and cfg.logger.mode == "online"


def test_every_line_of_a_plot_looks_different_even_past_ten():
    from neumeta_cl.report.plots import line_styles

    styles = line_styles(17)  # Table 1's strategies
    assert len({(s["color"], s["ls"]) for s in styles}) == 17
    assert [s["ls"] for s in styles[:10]] == ["-"] * 10 and styles[10]["color"] == styles[0]["color"] != styles[1]["color"]
