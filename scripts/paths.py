"""Continuous paths and permutation symmetry: runs experiments/paths.yaml and prints its figures.

    python scripts/paths.py                      # both parts (landscape ~25 min, rotated-20 ~30 min on 2 cores)
    python scripts/paths.py --part landscape     # barriers, curves, ODE flow, alignment time
    python scripts/paths.py --part rotated       # Rotated-Fashion-MNIST, 20 experiences, 3 seeds
    python scripts/paths.py --part align         # only the alignment time (median of 3) on the two MLPs
    python scripts/paths.py --quick              # the same code on small settings (a few minutes)
    python scripts/paths.py --from runs/paths    # re-read finished runs (landscape.json, rotated runs)

The last line is JSON: barrier_reduction_mlp, barrier_reduction_mlp_repair, bezier_over_linear,
ode_over_bezier, align_seconds, acc_rotated20 ({strategy: [mean, std]}), and the rest of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "landscape", "rotated", "align"], default="all")
    p.add_argument("--quick", action="store_true", help="small settings, same code")
    p.add_argument("--seeds", nargs="+", type=int, help="override the rotated study's seeds")
    p.add_argument("--out", default="runs")
    p.add_argument("--from", dest="from_dir", help="summarise a finished (or partly finished) output folder")
    p.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE applied to every run of the rotated study")
    from neumeta_cl.studies import overrides_first

    args = p.parse_args(overrides_first(argv))

    import torch

    from neumeta_cl.experiment import experiment_dict
    from neumeta_cl.report import table
    from neumeta_cl.studies import paths as study

    torch.set_num_threads(1)
    spec = experiment_dict("paths")
    out = Path(args.out) / ("paths-quick" if args.quick else "paths")
    out.mkdir(parents=True, exist_ok=True)
    console = table.console()
    land = summary = None
    if args.from_dir:
        src = Path(args.from_dir)
        if (src / "landscape.json").exists():
            land = json.loads((src / "landscape.json").read_text())
        summary, _ = study.read_rotated(src / "paths", list(spec["strategies"]))
        if summary is not None:
            summary.title = f"{spec['description']} · finished runs"
            console.print(table.rich_table(summary))
        figs = study.figures(land, summary)
        print(json.dumps(figs, allow_nan=False))
        return figs
    if args.part == "align":
        timing = study.align_timing(study.settings(spec, args.quick), out)
        figs = {"align_seconds": round(timing["weights"], 3), "align_seconds_activations": round(timing["activations"], 3),
                "weight_matching_sweeps": timing["weights_sweeps"]}
        print(json.dumps(figs, allow_nan=False))
        return figs
    if args.part in ("all", "landscape"):
        land = study.landscape_study(study.settings(spec, args.quick), out, log=console.print)
        (out / "landscape.json").write_text(json.dumps(land))
    if args.part in ("all", "rotated"):
        rspec = study.rotated_spec(spec, args.quick)
        if args.seeds:
            rspec["seeds"] = args.seeds
        extra = [*args.overrides, "train.progress_bar=false", f"logger.mode={args.wandb}"]
        summary, _ = study.rotated_study(rspec, out, extra)
        console.print(table.rich_table(summary))
        (out / "rotated_table.md").write_text(table.markdown(summary) + "\n")
    figs = study.figures(land, summary)
    study.log_wandb(args.wandb, out, land, figs)
    console.print(f"results: {out}")
    print(json.dumps(figs, allow_nan=False))
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
