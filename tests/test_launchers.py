"""The cluster launchers against the real engines: a local Ray cluster, and submitit's local executor
with a simulated SLURM preemption (the signal submitit handles, sent to the running task)."""

from __future__ import annotations

import json
import signal
import threading

import numpy as np
import pytest

from neumeta_cl.sweep.controller import run_sweep
from neumeta_cl.sweep.plan import from_multirun

from tests.sweep_helpers import SLOW_DIGITS, final_R, kill_mid_run, uninterrupted_R


def _sweep_in_thread(spec, launcher, out):
    box = {}
    thread = threading.Thread(target=lambda: box.update(outcome=run_sweep(spec, launcher_overrides=launcher,
                                                                           out_root=out)))
    thread.start()
    return thread, box


def test_ray_runs_a_task_per_run_and_a_task_whose_worker_dies_is_retried_and_resumes(tmp_path):
    """A real local Ray cluster with 2 CPUs: two runs in parallel; one worker is SIGKILLed mid-run,
    Ray retries its task, and the retry resumes from the checkpoint to the uninterrupted R."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        spec = from_multirun([*SLOW_DIGITS, "strategy=naive,ewc"])
        thread, box = _sweep_in_thread(spec, ["launcher=ray", "launcher.max_retries=1"], tmp_path / "sweep")
        folder, pid = kill_mid_run(tmp_path / "sweep", signal.SIGKILL, after=1)
        thread.join(timeout=600)
        outcome = box["outcome"]
    finally:
        ray.shutdown()
    assert outcome.exit_code == 0, [r.reason for r in outcome.failed]
    assert sorted(r.status for r in outcome.results.values()) == ["done", "done"]
    retried = next(r for r in outcome.results.values() if r.results == str(folder / "results.json"))
    assert retried.pid != pid  # the retry ran in another worker process
    data = json.loads((folder / "results.json").read_text())
    assert len(data["attempts"]) == 2 and data["attempts"][1]["from_experience"] >= 1
    assert data["runtime"]["threads"] == 1  # launcher.cpus_per_run
    strategy = "naive" if folder.name.startswith("naive") else "ewc"
    expected = uninterrupted_R([*SLOW_DIGITS, f"strategy={strategy}", "train.threads=1"], tmp_path / "ref")
    np.testing.assert_array_equal(final_R(folder / "results.json"), expected)


def test_slurm_array_through_submitit_requeues_a_preempted_task_and_resumes_it(tmp_path):
    """submitit's local executor runs the job array; USR2 (what SLURM sends before preempting, with
    ``--signal``) makes submitit requeue the task, which resumes from its checkpoint."""
    spec = from_multirun([*SLOW_DIGITS, "strategy=naive"])
    thread, box = _sweep_in_thread(spec, ["launcher=slurm", "launcher.cluster=local", "launcher.cpus_per_task=1"],
                                   tmp_path / "sweep")
    folder, pid = kill_mid_run(tmp_path / "sweep", signal.SIGUSR2, after=1)
    thread.join(timeout=600)
    outcome = box["outcome"]
    assert outcome.exit_code == 0, [r.reason for r in outcome.failed]
    [result] = outcome.results.values()
    assert result.status == "done" and result.pid != pid  # finished by the requeued task
    data = json.loads((folder / "results.json").read_text())
    assert len(data["attempts"]) == 2 and data["attempts"][1]["from_experience"] >= 1
    log = open(result.log).read()  # the task's stderr, submitit's own messages included
    assert "this job is preempted" in log and "Requeued job" in log
    expected = uninterrupted_R([*SLOW_DIGITS, "strategy=naive", "train.threads=1"], tmp_path / "ref")
    np.testing.assert_array_equal(final_R(folder / "results.json"), expected)


def test_slurm_parameters_come_from_config_and_no_slurm_is_one_sentence(tmp_path, capsys):
    import submitit

    from neumeta_cl.cli import main
    from neumeta_cl.sweep.launchers import build_launcher, load_launcher_config

    cfg = load_launcher_config(["launcher=slurm", "launcher.partition=gpu", "launcher.gpus_per_node=1",
                                "launcher.time_min=30", "launcher.additional={account: lab}"])
    launcher, threads = build_launcher(cfg, tmp_path)
    assert threads == 2 and launcher.max_requeues == 3
    params = launcher.parameters
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 1 and params["timeout_min"] == 30
    assert params["slurm_additional_parameters"] == {"account": "lab"} and params["slurm_array_parallelism"] == 64
    valid = submitit.SlurmExecutor._valid_parameters() | {"timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node"}
    assert {k.removeprefix("slurm_") for k in params} <= valid  # every name is one sbatch takes
    if __import__("shutil").which("srun") is None:  # here: no SLURM, so submitting is a user error
        code = main(["run", "-m", "benchmark=split_digits", "strategy=naive", "launcher=slurm", "--out", str(tmp_path)])
        assert code == 2
        assert "launcher=slurm cannot submit from this machine" in capsys.readouterr().err
