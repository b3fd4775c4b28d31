"""Runs that survive: real processes killed with real signals, resumed by rerunning the same command.

Every test here starts the real CLI (``neumeta-cl run``) in a child process on scikit-learn digits
and compares what a resumed run wrote with an uninterrupted run of the same config, bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neumeta_cl.cli import main as cli
from neumeta_cl.config import load
from neumeta_cl.run import run_continual
from neumeta_cl.strategies import STRATEGIES
from neumeta_cl.tracking.run_folder import config_hash

# Slow enough per experience (~60 steps) that a kill lands inside the experience we aim at.
BASE = ["benchmark=split_digits", "benchmark.n_experiences=5", "model.widths=[48]", "train.epochs=20",
        "train.batch_size=32", "train.lr=0.05", "logger.mode=disabled", "train.progress_bar=false", "train.threads=1",
        "metrics.curve_every_n_steps=5"]
SMALL = {  # per strategy: settings that keep it quick on digits
    "neumeta": ["benchmark.scenario=task", "strategy.hidden=24", "strategy.task_dim=8", "strategy.n_freqs=2",
                "strategy.recon_steps=5", "strategy.teacher_epochs=1", "train.epochs=4",
                "strategy.eval_fractions=[0.5,1.0]", "strategy.widths_unseen=[]"],
    "prune_grow": ["benchmark.scenario=task", "strategy.retrain_steps=5"],
    "replay": ["strategy.buffer_size=100"],
    "grow_ewc": ["strategy.grow_by=8", "model.widths=[32]"],
    "agem": ["strategy.buffer_size=100"],
    "er_ace": ["strategy.buffer_size=100"],
    "der": ["strategy.buffer_size=100"],
    "gdumb": ["strategy.buffer_size=100", "strategy.epochs=10"],
    "mas": ["benchmark.scenario=task", "strategy.mas_lambda=0.1"],  # lr 0.05 with lambda 1 is past stability here
    "si": ["benchmark.scenario=task"],
}
MORPHS = {  # a morph before the kill (its structure must come back) and one after it
    "default": "morph.schedule=[{at:2,op:widen,layer:0,to:64},{at:4,op:deepen,after:0}]",
    "prune_grow": "morph.schedule=[{at:0,op:widen,layer:0,to:64}]",  # frozen units do not follow later morphs
    "flow": "morph.schedule=[{at:0,op:widen,layer:0,to:64}]",  # a path's two ends need one structure
    "clewi": "morph.schedule=[{at:0,op:widen,layer:0,to:64}]",
}
# The default suite kills the strategies with the most state to restore (buffer, Fisher anchors
# through morphs, masks, a generator, a morph policy); `make test-slow` kills every other case too.
QUICK_CASES = {("replay", False), ("ewc", True), ("prune_grow", True), ("grow_ewc", True), ("neumeta", False)}
CASES = [pytest.param(s, m, id=f"{s}{'-morph' if m else ''}", marks=() if (s, m) in QUICK_CASES else pytest.mark.slow)
         for s in STRATEGIES.names() for m in (False, True) if not (m and s == "neumeta")]
CLI = [sys.executable, "-m", "neumeta_cl.cli", "run"]


def overrides(strategy: str, morph: bool, out: Path) -> list[str]:
    ov = [*BASE, f"strategy={strategy}", *SMALL.get(strategy, []), f"output_dir={out}"]
    if morph:
        ov.append(MORPHS.get(strategy, MORPHS["default"]))
    return ov


def results(out: Path) -> dict:
    [path] = out.glob("*/results.json")
    return json.loads(path.read_text())


def finished_experiences(out: Path) -> int:
    try:
        return len(results(out)["experiences"])
    except (ValueError, OSError, KeyError):  # not there yet
        return 0


def start(ov: list[str], **kw) -> subprocess.Popen:
    # A child of its own, as a cluster's job is: not attached to this process's W&B service.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, *ov], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def kill_when(proc: subprocess.Popen, out: Path, done: int, sig=signal.SIGKILL, timeout: float = 300) -> None:
    """Send ``sig`` as soon as ``done`` experiences are in results.json (so during experience ``done``)."""
    t0 = time.monotonic()
    while finished_experiences(out) < done:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before experience {done}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the run did not reach the experience in time")
        time.sleep(0.002)
    proc.send_signal(sig)
    proc.wait(timeout=120)


def assert_same_run(a: dict, b: dict) -> None:
    """R, b and every metric bitwise equal; the per-experience records too, except wall times."""
    assert a["R"] == b["R"] and a["b"] == b["b"]
    timed = ("seconds", "ms")
    for key, value in a["metrics"].items():
        if not any(t in key for t in timed):
            assert value == b["metrics"][key], key
    for ea, eb in zip(a["experiences"], b["experiences"], strict=True):
        assert ea["accuracy"] == eb["accuracy"] and ea["steps"] == eb["steps"]
        assert ea["global_step"] == eb["global_step"] and ea["lca_z"] == eb["lca_z"]
        assert ea["curve"]["accuracy"] == eb["curve"]["accuracy"] and ea["widths"] == eb["widths"]
        assert [m["op"] for m in ea["morphs"]] == [m["op"] for m in eb["morphs"]]
        assert [m.get("preservation_error") for m in ea["morphs"]] == [m.get("preservation_error") for m in eb["morphs"]]


@pytest.mark.parametrize("strategy,morph", CASES)
def test_sigkill_during_experience_3_then_rerun_gives_the_uninterrupted_run(tmp_path, strategy, morph):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = start(overrides(strategy, morph, killed))
    kill_when(proc, killed, done=3)
    assert proc.returncode == -signal.SIGKILL
    partial = results(killed)
    assert partial["status"] == "running" and len(partial["experiences"]) >= 3  # killed: no time to say more

    assert cli(["run", *overrides(strategy, morph, killed)]) == 0  # the same command again: it resumes
    resumed = results(killed)
    attempts = resumed["attempts"]
    assert len(attempts) == 2 and attempts[1]["from_experience"] in (2, 3)  # checkpoint of exp 2 (or 3)
    assert resumed["status"] == "completed"

    run_continual(load(overrides(strategy, morph, clean)))
    assert_same_run(resumed, results(clean))
    if morph:  # the widened / deepened structure came back from the checkpoint
        assert resumed["experiences"][-1]["widths"] == results(clean)["experiences"][-1]["widths"]


# 20-35 s each on digits: `make test-slow` runs them (gdumb, 5 s, stays in the default suite).
SLOW_TWICE = {"agem", "er_ace", "der", "mas", "si"}


@pytest.mark.parametrize("strategy", [pytest.param(s, marks=pytest.mark.slow if s in SLOW_TWICE else ())
                                      for s in STRATEGIES.names()])
def test_the_same_command_twice_gives_the_same_R(tmp_path, strategy):
    ov = overrides(strategy, False, tmp_path)
    a = run_continual(load(ov)).outcome.R
    b = run_continual(load([*ov, "resume=false"])).outcome.R  # a fresh folder, trained again
    assert len(list(tmp_path.glob("*/results.json"))) == 2
    np.testing.assert_array_equal(a, b)


def test_a_kill_while_the_checkpoint_is_written_leaves_a_whole_checkpoint(tmp_path):
    """Kill the moment a temporary checkpoint file appears; the checkpoint on disk must still load,
    and the rerun must finish with the uninterrupted run's numbers."""
    ov = [*overrides("replay", False, tmp_path / "a"), "model.widths=[1024,1024]", "train.epochs=2"]
    caught = 0
    for _ in range(5):  # the write takes milliseconds: try until a kill lands inside one
        proc = start(ov)
        while proc.poll() is None:
            tmp = [p for p in (tmp_path / "a").glob("*/.tmp-checkpoint.pt-*")]
            if tmp:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                caught += 1
                break
        folder = next((tmp_path / "a").glob("*/"))
        if (folder / "checkpoint.pt").exists():
            state = torch.load(folder / "checkpoint.pt", weights_only=True)  # whole, and plain data
            assert state["next_experience"] >= 1
        if caught:
            break
    assert caught, "no kill landed inside a checkpoint write in 5 tries"
    assert cli(["run", *ov]) == 0
    assert not list(folder.glob(".tmp-*"))  # the rerun cleared the half-written file
    run_continual(load([*ov, f"output_dir={tmp_path / 'b'}"]))
    assert_same_run(results(tmp_path / "a"), results(tmp_path / "b"))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path, sig, code):
    ov = overrides("ewc", False, tmp_path / "a")
    proc = start(ov)
    kill_when(proc, tmp_path / "a", done=2, sig=sig)
    assert proc.returncode == code
    err = proc.stderr.read()
    assert f"interrupted by {sig.name}" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    data = results(tmp_path / "a")
    assert data["status"] == "interrupted" and data["signal"] == sig.name
    assert len(data["experiences"]) in (2, 3) and len(data["R"]) == len(data["experiences"])
    assert cli(["run", *ov]) == 0
    run_continual(load([*ov[:-1], f"output_dir={tmp_path / 'b'}"]))
    assert_same_run(results(tmp_path / "a"), results(tmp_path / "b"))


def test_a_second_process_on_the_same_folder_refuses_and_a_dead_ones_lock_is_recovered(tmp_path):
    ov = overrides("naive", False, tmp_path)
    first = start(ov)
    t0 = time.monotonic()
    while not list(tmp_path.glob("*/checkpoint.pt")):  # the first holds the folder and has a checkpoint
        assert first.poll() is None and time.monotonic() - t0 < 300
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # paused, still alive, still holding the lock
    try:
        second = subprocess.run([*CLI, *ov], capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGKILL)  # then a crash: the lock file stays behind, its process is gone
        first.wait()
    assert second.returncode == 75
    assert f"is in use by process {first.pid} on" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob("*/.lock"))
    assert cli(["run", *ov]) == 0  # the stale lock is no obstacle: the run resumes and finishes
    data = results(tmp_path)
    assert data["status"] == "completed" and len(data["attempts"]) == 2


def test_a_finished_run_is_skipped_and_resume_false_starts_a_fresh_folder(tmp_path, capsys):
    ov = [*overrides("naive", False, tmp_path), "train.epochs=1"]
    assert cli(["run", *ov]) == 0
    [folder] = tmp_path.glob("*/")
    before = (folder / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli(["run", *ov]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (folder / "results.json").stat().st_mtime_ns == before  # not touched
    assert cli(["run", *ov, "resume=false"]) == 0
    folders = sorted(p.name for p in tmp_path.glob("*/"))
    assert folders == [folder.name, f"{folder.name}-2"]  # the old one is kept


def test_different_configs_never_share_a_folder(tmp_path):
    """Twenty configs that differ in one value each, started in the same second, get twenty folders."""
    base = load(overrides("ewc", False, tmp_path))
    from neumeta_cl.config import to_dict
    from neumeta_cl.run import plan_run_folder

    folders = set()
    for lam in range(10):
        for lr in (0.01, 0.02):
            cfg = load([*overrides("ewc", False, tmp_path), f"strategy.ewc_lambda={lam}", f"train.lr={lr}"])
            folders.add(plan_run_folder(cfg).path)
    assert len(folders) == 20
    # Keys that cannot change the numbers do not change the folder: a rerun with a progress bar resumes.
    quiet = to_dict(base)
    loud = to_dict(load([*overrides("ewc", False, tmp_path), "train.progress_bar=true", "logger.mode=offline"]))
    assert config_hash(quiet) == config_hash(loud)


def test_two_runs_started_together_with_one_run_name_write_two_folders(tmp_path):
    procs = [start([*overrides(s, False, tmp_path), "run_name=same", "train.epochs=2"]) for s in ("naive", "replay")]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    found = {json.loads(p.read_text())["config"]["strategy"]["name"] for p in tmp_path.glob("same-*/results.json")}
    assert found == {"naive", "replay"}


def test_results_json_is_readable_by_the_group(tmp_path):
    run_continual(load([*overrides("naive", False, tmp_path), "train.epochs=1"]))
    [path] = tmp_path.glob("*/results.json")
    mode = path.stat().st_mode
    assert mode & stat.S_IRGRP and mode & stat.S_IRUSR and mode & stat.S_IWUSR
    ckpt = path.parent / "checkpoint.pt"
    assert ckpt.stat().st_mode & stat.S_IRGRP


def test_results_record_what_a_rerun_needs(tmp_path):
    ov = [*overrides("naive", False, tmp_path), "train.epochs=1"]
    assert cli(["run", *ov]) == 0
    data = results(tmp_path)
    attempt = data["attempts"][0]
    assert attempt["overrides"] == ov and attempt["command"] == ["neumeta-cl", "run", *ov]
    assert data["config"]["train"]["epochs"] == 1 and data["config_hash"] in next(tmp_path.glob("*/")).name
    assert set(data["git"]) == {"sha", "dirty"} and data["versions"]["torch"].startswith("2.")
    assert data["runtime"]["threads"] == 1 and data["runtime"]["device"] == "cpu"


def test_a_resumed_wandb_run_continues_its_id_and_logs_each_step_once(tmp_path):
    from neumeta_cl.tracking.wandb_file import read_run

    ov = [o for o in overrides("replay", False, tmp_path / "a") if not o.startswith("logger.mode")]
    ov.append("logger.mode=offline")
    proc = start(ov)
    kill_when(proc, tmp_path / "a", done=3)
    assert cli(["run", *ov]) == 0
    run_continual(load([*ov[:-2], f"output_dir={tmp_path / 'b'}", "logger.mode=offline"]))
    data = results(tmp_path / "a")
    dirs = sorted((next((tmp_path / "a").glob("*/")) / "wandb").glob("offline-run-*"))
    assert len(dirs) == 2 and all(d.name.endswith(data["wandb_id"]) for d in dirs)  # one W&B run id
    seen: dict = {}
    for d in dirs:
        for row in read_run(d).history:
            for key in row:
                if not key.startswith("_") and key != "trainer/global_step":
                    pair = (row["trainer/global_step"], key)
                    assert pair not in seen, f"{pair} logged twice"
                    seen[pair] = row[key]
    [clean_dir] = (next((tmp_path / "b").glob("*/")) / "wandb").glob("offline-run-*")
    clean = {(row["trainer/global_step"], k): v for row in read_run(clean_dir).history for k, v in row.items()
             if not k.startswith("_") and k != "trainer/global_step"}
    assert set(seen) == set(clean)  # every step of the uninterrupted run, each once
    losses = {k: v for k, v in seen.items() if k[1] == "train/loss"}
    assert losses == {k: v for k, v in clean.items() if k[1] == "train/loss"}


def test_results_json_written_before_resume_existed_still_load_for_tables():
    from neumeta_cl.report import table

    old = json.loads((Path(__file__).parent / "data" / "results_v0.json").read_text())
    assert "attempts" not in old and "config_hash" not in old
    summary = table.from_groups({"naive": [old]}).frame()
    assert summary.loc["naive", "acc_mean"] == pytest.approx(np.mean(old["R"][-1]))
