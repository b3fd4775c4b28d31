"""What a launcher buys: one sweep of short digits runs, sequentially in one process and through launchers.

``speedup = (T_imports + T_sequential) / T_launcher``: what a user waits for either way. The
sequential process pays a fresh interpreter's imports once (``T_imports``, timed in a subprocess,
as a spawned worker pays them) and then runs the runs one after the other (``T_sequential``, their
configs resolved inside the timing); a launcher's workers pay the same imports, side by side.
``speedup_*_imports_excluded = T_sequential / T_launcher`` charges the imports to the launcher only.
A launcher's overhead per run is the wall time it adds over a perfect split of the sequential runs
on its ``p`` parallel slots, per run a slot carries, worker start-up included:
``overhead_s_per_run = (T_launcher - T_sequential / p) / (n_runs / p)``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

# Split-digits, 160 epochs of batches of 32 per experience: runs of 20-40 s, short against a real sweep's
# runs, and long enough that a worker's start-up (about 11 s of imports, once per worker) does not
# decide the figure: with 8 runs on 2 slots, runs of d seconds give at best 8d / (4d + 11).
RUNS = ["benchmark=split_digits", "train.epochs=160", "train.batch_size=32", "logger.mode=disabled",
        "metrics.curve_every_n_steps=0", "metrics.lca_beta=0", "train.threads=1"]
AXES = ["strategy=naive,ewc,replay,lwf", "seed=0,1"]  # 8 runs


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def import_seconds() -> float:
    """A fresh interpreter's start and imports of what a run needs (what a spawned worker pays)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import avalanche.benchmarks, neumeta_cl.run"], check=True)
    return time.perf_counter() - start


def sequential(out: Path) -> float:
    from neumeta_cl.config import load
    from neumeta_cl.run import run_continual
    from neumeta_cl.sweep.plan import expand, from_multirun

    jobs = expand(from_multirun([*RUNS, *AXES]))
    start = time.perf_counter()  # configs resolved inside the timing, as a launcher's plan is
    for j in jobs:
        run_continual(load([*j.overrides, f"output_dir={out}", f"run_name='{j.run_name}'", "train.progress_bar=false"]))
    return time.perf_counter() - start


def through(launcher: list[str], out: Path) -> float:
    from neumeta_cl.sweep.controller import run_sweep
    from neumeta_cl.sweep.plan import from_multirun

    start = time.perf_counter()
    outcome = run_sweep(from_multirun([*RUNS, *AXES]), launcher_overrides=launcher, out_root=out)
    seconds = time.perf_counter() - start
    if outcome.exit_code:
        raise RuntimeError(f"the sweep through {launcher} did not finish: {[r.reason for r in outcome.failed]}")
    return seconds


def measure(out_root: str | Path = "/tmp/neumeta_cl_bench_sweep", workers: int = 2) -> dict:
    import ray

    import avalanche.benchmarks  # noqa: F401  (the sequential process pays its imports before timing)

    out_root = Path(out_root)
    n = 8
    t_imports = import_seconds()
    t_seq = sequential(_fresh(out_root / "sequential"))
    t_local = through(["launcher=local", f"launcher.workers={workers}"], _fresh(out_root / "local"))
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        t_ray = through(["launcher=ray", "launcher.cpus_per_run=1"], _fresh(out_root / "ray"))
    finally:
        ray.shutdown()

    t_user = t_imports + t_seq  # what a user waits for running the runs one after the other

    def overhead(t: float) -> float:
        return (t - t_seq / workers) / (n / workers)

    return {"runs": n, "workers": workers, "imports_s": round(t_imports, 2), "sequential_s": round(t_seq, 2),
            "local_s": round(t_local, 2), "ray_s": round(t_ray, 2),
            "speedup_local": round(t_user / t_local, 3), "speedup_ray": round(t_user / t_ray, 3),
            "speedup_local_imports_excluded": round(t_seq / t_local, 3),
            "speedup_ray_imports_excluded": round(t_seq / t_ray, 3),
            "overhead_s_per_run_local": round(overhead(t_local), 2), "overhead_s_per_run_ray": round(overhead(t_ray), 2),
            "targets": {"speedup_local": 1.7, "speedup_ray": 1.5}}
