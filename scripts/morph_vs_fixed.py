"""Morphing vs fixed width: runs experiments/morph_vs_fixed.yaml and prints its figures.

    python scripts/morph_vs_fixed.py                      # 2 scenarios x 4 strategies x 3 seeds
    python scripts/morph_vs_fixed.py --from runs/morph_vs_fixed   # re-read a finished run
    python scripts/morph_vs_fixed.py --seeds 0            # one seed, for a quick look

The check: with task labels (task-incremental), at least one morph strategy (grow_ewc,
prune_grow) beats fixed-width EWC on ACC with the same or fewer final parameters. The last line
is JSON: best_morph_acc_taskil, ewc_acc_taskil, their final parameter counts, and every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")

MORPH_STRATEGIES = ("grow_ewc", "prune_grow")


def figures(summary) -> dict:
    rows = summary.reset_index().to_dict(orient="records")
    by = {r["label"]: r for r in rows}
    morph = [by[f"task_il/{s}"] for s in MORPH_STRATEGIES if f"task_il/{s}" in by]
    best = max(morph, key=lambda r: r["acc_mean"])
    ewc = by["task_il/ewc"]
    return {
        "best_morph_strategy_taskil": best["label"].split("/")[1],
        "best_morph_acc_taskil": round(best["acc_mean"], 4),
        "best_morph_params_taskil": int(best["final_params_mean"]),
        "ewc_acc_taskil": round(ewc["acc_mean"], 4),
        "ewc_params_taskil": int(ewc["final_params_mean"]),
        "target_met": bool(best["acc_mean"] > ewc["acc_mean"] and best["final_params_mean"] <= ewc["final_params_mean"]),
        "rows": {r["label"]: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "label"}
                 for r in rows},
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="from_dir", help="an existing morph_vs_fixed output folder to summarise")
    p.add_argument("--seeds", nargs="+", type=int, help="override the experiment's seeds")
    p.add_argument("--out", default="runs")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE applied to every run")
    from neumeta_cl.studies import overrides_first

    args = p.parse_args(overrides_first(argv))

    from neumeta_cl.experiment import load_experiment, run_experiment
    from neumeta_cl.report import table
    from neumeta_cl.report.runs import find_runs

    spec = load_experiment("morph_vs_fixed")
    console = table.console()
    if args.from_dir:
        out = Path(args.from_dir)
        made = table.build(find_runs([out]), spec.row_keys, title=spec.description,
                           row_of=lambda r: tuple(r.labels.get(k) or r.value(k) for k in spec.row_keys))
    else:
        res = run_experiment(spec, [*args.overrides, "train.progress_bar=false"], args.out, seeds=args.seeds)
        out, made = res.out_dir, res.table
    console.print(table.rich_table(made))
    summary = made.frame()
    figs = figures(summary)
    verdict = "MET" if figs["target_met"] else "NOT MET"
    console.print(f"task-incremental: best morph strategy {figs['best_morph_strategy_taskil']} ACC "
                  f"{figs['best_morph_acc_taskil']:.4f} with {figs['best_morph_params_taskil']:,} params vs EWC "
                  f"{figs['ewc_acc_taskil']:.4f} with {figs['ewc_params_taskil']:,}: {verdict}")
    print(json.dumps(figs))
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
