"""``launcher=local``: worker processes on this machine.

Each worker is a long-lived process (it imports torch once) that runs one job at a time with
``run_job``. A worker that dies (a segfault, the OOM killer, a SIGKILL) fails only its own job:
the pool starts a fresh worker and goes on. The runs' thread counts are budgeted so that the
threads of the runs running at once never exceed the cores (a run that pins ``train.threads``
takes that many cores while it runs).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing.connection import wait

from neumeta_cl.errors import RunInterrupted
from neumeta_cl.sweep.job import JobResult, JobSpec, run_job


def _stop_here(signum, frame) -> None:
    # Outside a run (idle, or loading a job's config) a stop signal ends what the worker is doing;
    # inside a run the run's own GracefulStop handles it and stops at a safe point.
    raise RunInterrupted(signum)


def _warm_up() -> None:
    """Import what every run needs while the pool waits for its first job (seconds per process)."""
    import avalanche.benchmarks  # noqa: F401  (stream definitions; the slowest import)

    import neumeta_cl.run  # noqa: F401


def _worker(conn) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    stops = {signal.SIGTERM, signal.SIGINT}
    for s in stops:
        signal.signal(s, _stop_here)
    try:
        _warm_up()
    except RunInterrupted:
        return
    while True:
        try:
            spec = conn.recv()
        except (EOFError, OSError, RunInterrupted):
            return
        if spec is None:
            return
        try:
            result = run_job(spec)
        except RunInterrupted as e:
            result = JobResult(spec.index, "interrupted", reason=str(e), exit_code=e.exit_code, log=spec.log)
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # the result must reach the pool whole
        try:
            conn.send(result)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.job: tuple[JobSpec, int] | None = None  # (spec, threads) while it runs one


class LocalLauncher:
    """Runs jobs in ``workers`` processes; ``threads_of(spec)`` is the cores each job takes."""

    name = "local"
    sees_start = True  # on_start is called as a worker takes the run

    def __init__(self, workers: int, cores: int):
        self.workers = max(1, int(workers))
        self.cores = max(1, int(cores))
        self._pool: list[_Worker] = []

    def prepare(self, n_jobs: int) -> None:
        """Start the workers now, so their imports overlap the sweep's planning."""
        ctx = mp.get_context("spawn")
        self._pool = [_Worker(ctx) for _ in range(min(self.workers, n_jobs))]

    def run(self, jobs: list[tuple[JobSpec, int]], on_start, on_done, stop) -> None:
        """Run ``(spec, threads)`` jobs; calls ``on_start(spec)`` and ``on_done(result)`` as they go.

        ``stop()`` returning a signal number asks the pool to stop: running jobs get that signal
        (their runs stop at a safe point and report ``interrupted``), queued jobs do not start.
        """
        ctx = mp.get_context("spawn")  # fork would copy the parent's torch threads and locks
        pending = list(jobs)
        pool = self._pool or [_Worker(ctx) for _ in range(min(self.workers, len(jobs)))]
        self._pool = []
        stopping = None
        try:
            while pending or any(w.job for w in pool):
                signum = stop()
                if signum and stopping is None:
                    stopping, pending = signum, []
                    for w in pool:
                        if w.job and w.process.is_alive():
                            os.kill(w.process.pid, signum)
                if not stopping:
                    self._dispatch(pool, pending, on_start)
                busy = [w for w in pool if w.job]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.2)
                for w in busy:
                    if w.conn in ready:
                        try:
                            result = w.conn.recv()
                        except (EOFError, OSError):
                            result = None
                        if result is not None:
                            w.job = None
                            on_done(result)
                            continue
                    if not w.process.is_alive() and w.job:  # died without a word: only its job fails
                        spec, _ = w.job
                        w.job = None
                        on_done(_died(spec, w.process.exitcode))
                        pool[pool.index(w)] = _Worker(ctx)
        finally:
            _shut_down(pool)

    def close(self) -> None:
        """Stop workers started by ``prepare`` that never got a job (every run was finished)."""
        _shut_down(self._pool, idle=True)
        self._pool = []

    def _dispatch(self, pool: list[_Worker], pending: list, on_start) -> None:
        idle = [w for w in pool if not w.job]
        used = sum(threads for w in pool if w.job for _, threads in [w.job])
        while idle and pending:
            # The first queued job that fits in the free cores (or any job, when nothing runs).
            pick = next((i for i, (_, threads) in enumerate(pending) if used + threads <= self.cores), None)
            if pick is None:
                if used:
                    return
                pick = 0
            spec, threads = pending.pop(pick)
            w = idle.pop(0)
            w.job = (spec, threads)
            used += threads
            w.conn.send(spec)
            on_start(spec)


def _shut_down(pool: list[_Worker], idle: bool = False) -> None:
    for w in pool:
        try:
            w.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        if idle and w.process.is_alive():  # still importing, holding nothing: no need to wait for it
            w.process.terminate()
    for w in pool:
        w.process.join(timeout=5)
        if w.process.is_alive():
            w.process.kill()


def _died(spec: JobSpec, exitcode: int | None) -> JobResult:
    how = f"signal {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    return JobResult(spec.index, "failed", reason=f"the worker process died ({how}); rerun the sweep to resume the run",
                     exit_code=1, log=spec.log)
