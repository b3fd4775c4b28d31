"""Sweep throughput: 8 short digits runs sequentially in one process, with launcher=local (2 workers)
and with launcher=ray on a local 2-CPU cluster.

    python scripts/bench_sweep.py

What is measured and how (both sides pay a fresh interpreter's imports):
``neumeta_cl.studies.sweep_speed``. Targets on 2 cores: local at least 1.7x, ray at least 1.5x.
The last line is JSON with speedup_local, speedup_ray, overhead_s_per_run_local and
overhead_s_per_run_ray.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")


def main() -> dict:
    from neumeta_cl.studies.sweep_speed import measure

    figs = measure()
    for key in ("imports_s", "sequential_s", "local_s", "ray_s"):
        print(f"{key:<12} {figs[key]:8.1f} s")
    for key, target in figs["targets"].items():
        verdict = "met" if figs[key] >= target else "NOT met"
        print(f"{key:<14} {figs[key]:.2f}x (target >= {target}x: {verdict}); "
              f"{figs[key + '_imports_excluded']:.2f}x with the imports charged to the launcher only; "
              f"overhead per run {figs['overhead_s_per_run_' + key.split('_')[1]]:.2f} s")
    print(json.dumps(figs))
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
