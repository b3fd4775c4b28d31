"""Run a sweep: plan and validate every run, skip the finished ones, launch the rest, report.

The sweep lives in ``<out>/<sweep name>/``: one run folder per run (named by its labels and
config hash, so a rerun finds them again), ``logs/`` with each run's output, and ``sweep.json``,
rewritten after every event, with the plan and how each run ended. Rerunning the same sweep skips
finished runs, resumes unfinished ones and reruns failed ones.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from neumeta_cl.errors import RunInterrupted
from neumeta_cl.sweep.job import JobResult, JobSpec
from neumeta_cl.sweep.launchers import build_launcher, load_launcher_config
from neumeta_cl.sweep.plan import Job, PlannedRun, SweepSpec, expand, validate
from neumeta_cl.sweep.progress import SweepProgress, stderr_console, summary_table
from neumeta_cl.tracking.atomic import write_json_atomic
from neumeta_cl.tracking.results import load_results

MANIFEST = "sweep.json"


@dataclass
class SweepOutcome:
    name: str
    sweep_dir: Path
    planned: list[PlannedRun]
    results: dict[int, JobResult] = field(default_factory=dict)
    signal: int | None = None

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results.values() if r.status not in ("done", "skipped")]

    @property
    def exit_code(self) -> int:
        if self.signal:
            return 128 + self.signal
        return 1 if self.failed or len(self.results) < len(self.planned) else 0


def run_overrides(job: Job, sweep_dir: Path, sweep_name: str) -> list[str]:
    """What the sweep adds to a job's overrides: its folder, name, W&B group and tags, no progress bars."""
    # quoted: a label may hold commas or brackets (model.widths=[128,128])
    tags = ",".join(repr(f"{k}-{v}" if k != "seed" else f"s{v}") for k, v in job.labels.items())
    return [*job.overrides, f"output_dir={sweep_dir}", f"run_name='{job.run_name}'", f"logger.group={sweep_name}",
            f"logger.tags=[{tags}]", "train.progress_bar=false"]


class _Stop:
    """SIGTERM / SIGINT to the sweep: stop launching, pass the signal on to the running runs."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)

    def __call__(self) -> int | None:
        return self.signum


def run_sweep(spec: SweepSpec, extra: list[str] | None = None, launcher_overrides: list[str] | None = None,
              out_root: str | Path = "runs", console=None, command: list[str] | None = None) -> SweepOutcome:
    """Validate the whole plan (a ``ConfigError`` lists every bad run), then run what is not finished."""
    console = console or stderr_console()
    sweep_dir = Path(out_root) / spec.name
    launcher_cfg = load_launcher_config(list(launcher_overrides or []))
    launcher, default_threads = build_launcher(launcher_cfg, sweep_dir)
    try:
        with _Stop() as stop:  # a signal while planning stops the sweep once the plan is made, before any run
            return _run_sweep(spec, extra, sweep_dir, launcher_cfg, launcher, default_threads, console, command, stop)
    finally:
        if hasattr(launcher, "close"):
            launcher.close()


def _run_sweep(spec, extra, sweep_dir: Path, launcher_cfg, launcher, default_threads: int, console, command,
               stop: _Stop) -> SweepOutcome:
    jobs = expand(spec, list(extra or []))
    if hasattr(launcher, "prepare"):
        launcher.prepare(len(jobs))
    planned = validate(jobs, lambda job: run_overrides(job, sweep_dir, spec.name))
    outcome = SweepOutcome(spec.name, sweep_dir, planned)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    by_index = {p.job.index: p for p in planned}

    def write_manifest() -> None:
        write_json_atomic(sweep_dir / MANIFEST, {
            "name": spec.name, "description": spec.description, "source": str(spec.source) if spec.source else None,
            "command": command or list(sys.argv), "launcher": OmegaConf.to_container(launcher_cfg), "table": spec.table,
            "runs": [{"index": p.job.index, "run": p.job.label, "labels": p.job.labels, "overrides": list(p.job.overrides),
                      "folder": str(p.folder.path), **(outcome.results[p.job.index].to_dict()
                                                       if p.job.index in outcome.results else {"status": "pending"})}
                     for p in planned],
        })

    to_launch = []
    for p in planned:
        threads = p.cfg.train.threads or default_threads
        ov = run_overrides(p.job, sweep_dir, spec.name)
        if not p.cfg.train.threads:
            ov.append(f"train.threads={threads}")
        log = sweep_dir / "logs" / f"{p.folder.path.name}.log"
        to_launch.append((JobSpec(p.job.index, p.job.label, dict(p.job.labels), tuple(ov), spec.name, str(log)), threads))
    parallel = getattr(launcher, "workers", None) or max(1, (getattr(launcher, "cores", 0) or 2) // max(default_threads, 1))
    if stop.signum:
        raise RunInterrupted(stop.signum)
    with SweepProgress(spec.name, len(planned), parallel, console, getattr(launcher, "sees_start", True)) as progress:
        started: set[int] = set()

        def on_start(job: JobSpec) -> None:
            started.add(job.index)
            progress.start(_name(by_index[job.index]))

        def on_done(result: JobResult) -> None:
            p = by_index[result.index]
            result.results = result.results or str(p.folder.results)
            outcome.results[result.index] = result
            progress.finish(_name(p), result.status, result.seconds, result.acc, result.reason,
                            was_running=result.index in started)
            write_manifest()

        write_manifest()
        queue = []
        for job, threads in to_launch:
            p = by_index[job.index]
            if p.folder.state == "finished":  # nothing to launch: read back from results.json
                data = load_results(p.folder.results)
                acc = sum(data["R"][-1]) / len(data["R"][-1])
                on_done(JobResult(job.index, "skipped", results=str(p.folder.results), wandb_dir=data.get("wandb_dir"),
                                  acc=acc, log=job.log))
            else:
                queue.append((job, threads))
        if queue:
            launcher.run(queue, on_start, on_done, stop)
        outcome.signal = stop.signum
    write_manifest()
    return outcome


def _name(p: PlannedRun) -> str:
    seed = p.job.labels.get("seed")
    return p.job.label + (f" seed {seed}" if seed is not None else "")


def summary_rows(outcome: SweepOutcome) -> list[dict]:
    rows = []
    for p in outcome.planned:
        r = outcome.results.get(p.job.index)
        row = {"run": _name(p), "status": r.status if r else "not started"}
        if r:
            row.update(acc=r.acc, seconds=r.seconds, results=r.results, reason=r.reason, log=r.log)
        else:
            row.update(reason="the sweep stopped before it started; rerun the sweep to run it")
        rows.append(row)
    return rows


def print_summary(outcome: SweepOutcome, console) -> None:
    console.print(summary_table(summary_rows(outcome)))
    counts = {}
    for row in summary_rows(outcome):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    console.print("sweep " + outcome.name + ": " + ", ".join(f"{n} {s}" for s, n in counts.items())
                  + f" · {outcome.sweep_dir / MANIFEST}")
    if outcome.exit_code:
        console.print("Rerun the same command to go on: finished runs are skipped, unfinished ones resume, "
                      "failed ones run again.")
