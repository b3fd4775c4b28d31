"""Sweeps: the plan, its validation, the local launcher, reruns, and a worker killed mid-run."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from neumeta_cl.cli import main
from neumeta_cl.errors import ConfigError
from neumeta_cl.sweep.plan import expand, from_multirun, load_spec, quick_variant, spec_from_dict
from neumeta_cl.sweep.progress import eta_seconds
from neumeta_cl.tracking.wandb_file import read_run

from tests.sweep_helpers import SLOW_DIGITS, cli, final_R, kill_mid_run, uninterrupted_R

FAST = ["benchmark=split_digits", "model.widths=[32]", "train.epochs=2", "metrics.curve_every_n_steps=0"]


def test_multirun_syntax_expands_to_the_cartesian_product():
    spec = from_multirun(["strategy=naive,ewc,replay", "seed=range(2)", "train.lr=0.01,0.05", "train.epochs=2"])
    jobs = expand(spec)
    assert len(jobs) == 3 * 2 * 2
    assert spec.overrides == ["train.epochs=2"]
    assert jobs[0].labels == {"strategy": "naive", "seed": "0", "train.lr": "0.01"}
    assert jobs[-1].overrides == ("train.epochs=2", "strategy=replay", "seed=1", "train.lr=0.05")
    assert {j.run_name for j in jobs} == {f"{s}-s{seed}-{lr}" for s in ("naive", "ewc", "replay")
                                          for seed in (0, 1) for lr in ("0.01", "0.05")}
    assert spec.name == from_multirun(["strategy=naive,ewc,replay", "seed=range(2)", "train.lr=0.01,0.05",
                                       "train.epochs=2"]).name  # the same command finds the same sweep folder


def test_sweep_files_labelled_axes_exclude_and_quick():
    spec = spec_from_dict({
        "name": "t", "overrides": ["benchmark=split_digits"],
        "axes": {"scenario": {"class_il": [], "task_il": ["benchmark.scenario=task"]},
                 "strategy": ["naive", "ewc"], "seed": "range(3)"},
        "exclude": [{"scenario": "class_il", "strategy": "ewc"}],
        "quick": {"axes": {"seed": [0]}, "overrides": ["train.epochs=1"]},
    })
    jobs = expand(spec)
    assert len(jobs) == (2 * 2 - 1) * 3
    assert all(not (j.labels["scenario"] == "class_il" and j.labels["strategy"] == "ewc") for j in jobs)
    assert jobs[0].label == "class_il/naive" and jobs[0].run_name == "class_il-naive-s0"
    quick = expand(quick_variant(spec))
    assert len(quick) == 3 and all(j.overrides[-1] == "seed=0" and "train.epochs=1" in j.overrides for j in quick)


def test_every_committed_sweep_and_experiment_expands():
    from neumeta_cl.config import experiment_choices
    from neumeta_cl.paths import config_dir, experiments_dir
    from neumeta_cl.sweep.plan import sweep_choices

    for name in sweep_choices():
        assert expand(load_spec(name, (config_dir() / "sweep",)))
    for name in experiment_choices():
        assert expand(load_spec(name, (experiments_dir(),)))


def test_bad_sweep_definitions_are_one_sentence():
    with pytest.raises(ConfigError, match="Unknown key"):
        spec_from_dict({"name": "x", "axez": {}})
    with pytest.raises(ConfigError, match="write the values out"):
        from_multirun(["train.lr=interval(0,1)"])
    with pytest.raises(ConfigError, match="no quick variant"):
        quick_variant(spec_from_dict({"name": "x", "strategies": {"a": ["strategy=naive"]}}))


def test_every_bad_combination_is_reported_at_once_before_training(tmp_path, capsys):
    code = main(["run", "-m", *FAST, "strategy=naive,ewcc", "seed=0,-1", "train.lr=0.1,-0.1", "logger.mode=disabled",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: 7 of the sweep's 8 runs cannot start")
    assert err.count("Unknown strategy 'ewcc'") == 4 and err.count("seed must be an integer") == 2
    assert err.count("train.lr must be positive") == 1  # naive, seed 0, lr -0.1: the one bad value of that run
    assert not list(tmp_path.rglob("results.json"))  # nothing trained


def test_duplicate_runs_and_bad_launcher_settings_are_errors(tmp_path, capsys):
    assert main(["run", "-m", *FAST, "strategy=naive,naive", "--out", str(tmp_path)]) == 2
    assert "the same run as strategy=naive" in capsys.readouterr().err
    assert main(["run", "-m", *FAST, "strategy=naive", "launcher=slurmm", "--out", str(tmp_path)]) == 2
    assert "Unknown launcher 'slurmm'; valid launchers are: local, ray, slurm." in capsys.readouterr().err
    assert main(["run", "-m", *FAST, "strategy=naive", "launcher.wokers=2", "--out", str(tmp_path)]) == 2
    assert "Unknown key launcher.wokers for launcher=local" in capsys.readouterr().err
    assert main(["run", "-m", *FAST, "strategy=naive", "launcher.workers=0", "--out", str(tmp_path)]) == 2
    assert "launcher.workers must be a positive integer" in capsys.readouterr().err


def test_local_sweep_runs_in_parallel_groups_wandb_and_a_rerun_skips(tmp_path, capsys):
    args = ["run", "-m", *FAST, "strategy=naive,ewc", "seed=0,1", "launcher.workers=2", "--out", str(tmp_path)]
    assert main(args) == 0
    [sweep_dir] = tmp_path.iterdir()
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    runs = manifest["runs"]
    assert [r["status"] for r in runs] == ["done"] * 4
    # 2 workers on (at most) 2 cores: each run got 1 thread, and runs overlapped in time.
    for r in runs:
        data = json.loads(open(r["results"]).read())
        assert data["runtime"]["threads"] == 1
        assert data["sweep"] == {"name": sweep_dir.name, "labels": r["labels"]}
        wandb = read_run(next((sweep_dir / r["folder"].split("/")[-1] / "wandb").glob("offline-run-*")))
        assert wandb.group == sweep_dir.name
        assert f"strategy-{r['labels']['strategy']}" in wandb.tags and f"s{r['labels']['seed']}" in wandb.tags
    spans = sorted((r["started"], r["ended"]) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # some run started before the previous ended
    out = capsys.readouterr().out
    assert "4 done" in out and "naive" in out and "ewc" in out
    assert main(args) == 0
    rerun = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    assert [r["status"] for r in rerun] == ["skipped"] * 4
    assert [r["results"] for r in rerun] == [r["results"] for r in runs]


@pytest.mark.slow
def test_runs_that_pin_more_threads_do_not_share_the_cores(tmp_path):
    from neumeta_cl.sweep.controller import run_sweep

    spec = from_multirun([*FAST, "strategy=naive,ewc", "train.threads=2", "logger.mode=disabled"])
    outcome = run_sweep(spec, launcher_overrides=["launcher.workers=2", "launcher.cores=2"], out_root=tmp_path)
    assert outcome.exit_code == 0
    spans = sorted((r.started, r.ended) for r in outcome.results.values())
    assert spans[1][0] >= spans[0][1]  # 2 workers, but 2 + 2 threads > 2 cores: one after the other


def test_a_failed_run_does_not_stop_the_sweep_and_the_exit_code_says_so(tmp_path, capsys):
    # lr=1e30 diverges (NaN loss): a real failure of one run among three.
    code = main(["run", "-m", *FAST, "strategy=naive", "train.lr=0.05,1e30", "seed=0", "logger.mode=disabled",
                 "launcher.workers=2", "--out", str(tmp_path)])
    assert code == 1
    [sweep_dir] = tmp_path.iterdir()
    runs = {r["labels"]["train.lr"]: r for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]}
    assert runs["0.05"]["status"] == "done"
    failed = runs["1e+30"]  # Hydra's spelling of the value
    assert failed["status"] == "failed" and "The training loss became nan at experience 0" in failed["reason"]
    assert json.loads(open(failed["results"]).read())["status"] == "failed"
    out = capsys.readouterr().out
    assert "1 done, 1 failed" in out and "Rerun the same command" in out


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_run_and_a_rerun_resumes_it_bitwise(tmp_path):
    overrides = [*SLOW_DIGITS, "strategy=naive,ewc"]
    proc = cli("run", "-m", *overrides, "launcher.workers=2", "launcher.cores=2", "--out", str(tmp_path / "sweep"))
    folder, pid = kill_mid_run(tmp_path / "sweep", signal.SIGKILL, after=2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    [sweep_dir] = (tmp_path / "sweep").iterdir()
    runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
    killed = next(r for r in runs if r["folder"] == str(folder))
    other = next(r for r in runs if r["folder"] != str(folder))
    assert killed["status"] == "failed" and "the worker process died (signal SIGKILL)" in killed["reason"]
    assert other["status"] == "done"
    again = cli("run", "-m", *overrides, "launcher.workers=2", "launcher.cores=2", "--out", str(tmp_path / "sweep"))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    rerun = {r["folder"]: r for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]}
    assert rerun[str(folder)]["status"] == "done" and rerun[other["folder"]]["status"] == "skipped"
    resumed = json.loads((folder / "results.json").read_text())
    assert len(resumed["attempts"]) == 2 and resumed["attempts"][1]["from_experience"] >= 1  # the last checkpoint
    strategy = "naive" if "naive" in folder.name else "ewc"
    expected = uninterrupted_R([*SLOW_DIGITS, f"strategy={strategy}", "train.threads=1"], tmp_path / "ref")
    np.testing.assert_array_equal(final_R(folder / "results.json"), expected)


def test_eta_counts_running_runs_as_half_done():
    assert eta_seconds([], 5, 1, 2) is None
    assert eta_seconds([10.0, 20.0], remaining=4, running=2, parallel=2) == pytest.approx(15.0 * 5 / 2)


def test_progress_does_not_count_submitted_runs_as_running():
    """Ray and SLURM report a run when it is submitted: with 2 slots, 8 submitted runs are 2 running
    and 6 queued, and the time left counts the queued ones as not started."""
    import io

    from rich.console import Console

    from neumeta_cl.sweep.progress import SweepProgress, split_submitted

    assert split_submitted(8, 2, sees_start=False) == (2, 6)
    assert split_submitted(1, 2, sees_start=False) == (1, 0)
    assert split_submitted(3, 2, sees_start=True) == (3, 0)
    out = io.StringIO()
    for sees_start, shown, event in [(False, "~2 running, ~5 queued", "submitted"), (True, "7 running", "started")]:
        progress = SweepProgress("s", total=8, parallel=2, console=Console(file=out, width=200), sees_start=sees_start)
        for i in range(8):
            progress.start(f"run{i}")
        progress.finish("run0", "done", 10.0, 0.5, None)
        line = progress._line().plain
        assert shown in line and "1/8 finished" in line, line
        assert f"{event} run7" in out.getvalue()
        left = 10.0 * (0 + 0.5 * 7) / 2 if sees_start else 10.0 * (5 + 0.5 * 2) / 2  # queued runs are not half done
        assert line.endswith(f"left ~0:{int(round(left)):02d}"), line


def test_list_valued_axes_make_folder_names_and_quoted_wandb_tags():
    from pathlib import Path

    from neumeta_cl.config import load
    from neumeta_cl.sweep.controller import run_overrides

    jobs = expand(from_multirun(["benchmark=split_digits", "model.widths=[32],[16,16]", "seed=0"]))
    cfgs = [load(run_overrides(j, Path("/tmp/sweep"), "s")) for j in jobs]
    assert [c.run_name for c in cfgs] == ["32", "16x16"]  # seed=0 is one value: not an axis
    assert [list(c.model.widths) for c in cfgs] == [[32], [16, 16]]
    assert list(cfgs[1].logger.tags) == ["model.widths-[16,16]"] and cfgs[1].logger.group == "s"


def test_an_experiment_whose_every_run_fails_ends_with_its_summary(tmp_path, capsys):
    """No finished run means an empty table: the summary and exit code 1, not a crash building it."""
    doomed = tmp_path / "doomed.yaml"
    doomed.write_text("name: doomed\n"
                      "overrides: [benchmark=split_digits, 'model.widths=[16]', train.epochs=1, train.lr=1e12, "
                      "logger.mode=disabled, train.progress_bar=false]\n"
                      "strategies: {naive: [strategy=naive]}\nseeds: [0]\n")
    assert main(["experiment", str(doomed), "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "failed naive seed 0 (The training loss became nan" in err and "Traceback" not in err
    assert json.loads((tmp_path / "runs" / "doomed" / "summary.json").read_text())["table"] == []
    assert [r["status"] for r in json.loads((tmp_path / "runs" / "doomed" / "sweep.json").read_text())["runs"]] == ["failed"]
