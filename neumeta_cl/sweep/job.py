"""One run of a sweep, run by whichever process a launcher chose, reported as plain data.

``run_job`` never raises for what a run can do wrong: a bad config, a NaN loss, a signal, a bug.
It returns a ``JobResult`` saying how the run ended, and writes the run's output (and a
traceback, for a bug) to the job's log file, so one run's failure never stops a sweep.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from neumeta_cl.errors import RunInterrupted, TrainingDiverged, UserError

# How a job can end. "busy": another live process holds the run folder (e.g. a copy of the sweep).
STATUSES = ("done", "skipped", "failed", "interrupted", "busy")


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to run one job: plain data, cheap to send to another process or machine."""

    index: int
    label: str
    labels: dict
    overrides: tuple[str, ...]
    sweep: str
    log: str  # the job's log file


@dataclass
class JobResult:
    index: int
    status: str
    reason: str | None = None
    results: str | None = None
    wandb_dir: str | None = None
    seconds: float = 0.0
    exit_code: int = 0
    log: str | None = None
    acc: float | None = None
    pid: int | None = None
    started: float | None = None  # wall clock (time.time()) when the job started and ended
    ended: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path`` for a while."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_job(spec: JobSpec) -> JobResult:
    """Run one job in this process; how it ended comes back as a ``JobResult``."""
    from neumeta_cl.config import load
    from neumeta_cl.run import run_continual
    from neumeta_cl.tracking.run_folder import RunInUse

    start = time.perf_counter()
    result = JobResult(spec.index, "failed", log=spec.log, pid=os.getpid(), started=time.time())
    with output_to(Path(spec.log)) as log:
        print(f"== {spec.label} (pid {os.getpid()}): neumeta-cl run {' '.join(spec.overrides)}", flush=True)
        try:
            cfg = load(list(spec.overrides))
            run = run_continual(cfg, overrides=list(spec.overrides), sweep={"name": spec.sweep, "labels": spec.labels},
                                command=["neumeta-cl", "run", *spec.overrides])
            result.status = "skipped" if run.skipped else "done"
            result.results, result.wandb_dir = str(run.results_path), run.wandb_dir
            result.acc = float(run.outcome.R[-1].mean())
        except RunInUse as e:
            result.status, result.reason, result.exit_code = "busy", str(e), e.exit_code
        except UserError as e:
            result.reason, result.exit_code = str(e), e.exit_code
        except TrainingDiverged as e:
            result.reason, result.exit_code = str(e), e.exit_code
        except RunInterrupted as e:
            result.status, result.reason, result.exit_code = "interrupted", str(e), e.exit_code
        except Exception as e:  # a bug: the sweep goes on, the traceback goes to the log
            traceback.print_exc(file=log)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            result.reason, result.exit_code = f"{type(e).__name__}: {first} (traceback in {spec.log})", 1
        if result.results is None:
            result.results = _results_path(spec)
        print(f"== {result.status}" + (f": {result.reason}" if result.reason else ""), flush=True)
    result.seconds = time.perf_counter() - start
    result.ended = time.time()
    return result


def _results_path(spec: JobSpec) -> str | None:
    """Where the run's results.json is (or would be), for a run that did not come back with one."""
    from neumeta_cl.config import load
    from neumeta_cl.run import plan_run_folder

    try:
        return str(plan_run_folder(load(list(spec.overrides))).results)
    except Exception:  # the config itself is bad: there is no folder
        return None
