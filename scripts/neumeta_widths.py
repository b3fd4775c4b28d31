"""NeuMeta at any width: runs experiments/neumeta_widths.yaml and individually trained baselines.

    python scripts/neumeta_widths.py                    # 3 seeds (about 12 minutes each on 2 cores)
    python scripts/neumeta_widths.py --seeds 0          # one seed
    python scripts/neumeta_widths.py --from runs/neumeta_widths-<stamp> [...]   # re-read finished runs
    python scripts/neumeta_widths.py --quick            # a smoke run on digits (tests use it)
    python scripts/neumeta_widths.py strategy.reg_weight=30 --baselines runs/neumeta_widths-<stamp>
                                                        # a NeuMeta variant against the same baselines

For every seed, every task and every evaluated width (the strategy's ``eval_fractions`` and its
held-out ``widths_unseen``), a network of that width is trained on that task alone, with the same
optimizer and epochs: the task-incremental upper bound at that width. The table compares them with
the networks the one INR generates after the whole stream, and the backward transfer of the
generated networks at each width. The last line is JSON: acc_full, acc_full_upper, bwt,
acc_by_width ({fraction: [ours, individual]}), bwt_by_width, unseen_width, stored_params,
individual_params_total, gen_ms_full, minutes_per_seed and targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("WANDB_SILENT", "true")
warnings.filterwarnings("ignore", message="no QP solver found")  # Avalanche imports qpsolvers; we use none

QUICK = ["benchmark=split_digits", "model.channels=[8,16]", "train.epochs=6", "train.batch_size=32", "train.lr=0.003",
         "strategy.teacher_epochs=2", "strategy.recon_steps=100", "strategy.hidden=64", "strategy.task_dim=16",
         "strategy.reg_weight=10",
         "logger.mode=disabled"]


def train_individuals(cfg, fractions: list[float]) -> dict:
    """Accuracy and parameters of a network trained on each task alone, at each width fraction."""
    import torch

    from neumeta_cl.config import to_dict
    from neumeta_cl.hypernet.layout import TargetLayout
    from neumeta_cl.nets import build_model
    from neumeta_cl.nets.evaluation import tensor_accuracy
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies.fit import fit_experience
    from neumeta_cl.strategies import OptimConfig

    t = cfg.train
    if t.threads:
        torch.set_num_threads(int(t.threads))
    stream = build_stream_from(cfg)
    layout = TargetLayout.from_net(build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads))
    optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay)
    out = {"fractions": fractions, "accuracy": [], "params": [], "widths": [], "seconds": 0.0}
    t0 = time.perf_counter()
    for f in fractions:
        widths = layout.at_fraction(f)
        accs, params = [], []
        for j, (train, test) in enumerate(zip(stream.train, stream.test)):
            torch.manual_seed(cfg.seed * 1000 + j)
            net = layout.build(widths, stream.heads[j], batchnorm=layout.batchnorm)
            fit_experience(net, train, epochs=t.epochs, optim=optim, batch_size=t.batch_size, seed=cfg.seed + 1000 * j,
                           accelerator=t.accelerator)
            accs.append(tensor_accuracy(net, test.x, test.y, batch_size=t.eval_batch_size))
            params.append(layout.param_count(widths, stream.heads[j]))  # deployed: BatchNorm folded away
        out["accuracy"].append(accs)
        out["params"].append(params)
        out["widths"].append(list(widths))
    out["seconds"] = time.perf_counter() - t0
    return out


def width_matrix(result: dict, fraction: float) -> np.ndarray:
    """R at one width: R[i, j] = accuracy on task j of the network generated at ``fraction`` after
    experience i (from the width sweeps; NaN for tasks not yet seen)."""
    T = len(result["experiences"])
    R = np.full((T, T), np.nan)
    for i, e in enumerate(result["experiences"]):
        acc = next(w for w in e["widths_eval"] if w["fraction"] == fraction)["accuracy"]
        R[i, : len(acc)] = acc
    return R


def figures(results: list[dict], individuals: list[dict], seconds_per_seed: list[float]) -> dict:
    """The experiment's numbers from each seed's results.json and its individually trained networks."""
    from neumeta_cl.metrics import backward_transfer

    rows = {}
    fractions = individuals[0]["fractions"]
    # Each seed's width sweep after the last experience: every task, every width.
    sweeps = [{w["fraction"]: w for w in r["experiences"][-1]["widths_eval"]} for r in results]
    for k, f in enumerate(fractions):
        ours = [sweep[f]["acc_seen"] for sweep in sweeps]
        ind = [float(np.mean(i["accuracy"][k])) for i in individuals]
        rows[f] = {"widths": sweeps[0][f]["widths"], "unseen": sweeps[0][f]["unseen"],
                   "params": int(np.mean(individuals[0]["params"][k])),
                   "ours": float(np.mean(ours)), "ours_std": float(np.std(ours)),
                   "individual": float(np.mean(ind)), "individual_std": float(np.std(ind)),
                   "bwt": float(np.mean([backward_transfer(width_matrix(r, f)) for r in results])),
                   "gen_ms": float(np.median([sweep[f]["gen_ms"] for sweep in sweeps]))}
    full = rows[1.0]
    acc_full = float(np.mean([r["metrics"]["acc"] for r in results]))
    bwt = float(np.mean([r["metrics"]["bwt"] for r in results]))
    unseen = [f for f, row in rows.items() if row["unseen"]]
    stored = int(results[0]["experiences"][-1]["strategy"]["stored_params"])
    individual_total = int(sum(sum(p) for p in individuals[0]["params"]))
    gaps = {f: row["individual"] - row["ours"] for f, row in rows.items()}
    targets = {
        "full_within_1pt": bool(gaps[1.0] <= 0.01),
        "bwt_at_least_minus_0.01": bool(bwt >= -0.01),
        "widths_within_2pt": bool(all(gaps[f] <= 0.02 for f in rows if f != 1.0 and not rows[f]["unseen"])),
        "unseen_within_3pt": bool(all(gaps[f] <= 0.03 for f in unseen)),
        "fewer_stored_params": bool(stored < individual_total),
        "gen_full_under_100ms": bool(full["gen_ms"] < 100),
        "under_20_min_per_seed": bool(np.mean(seconds_per_seed) < 20 * 60),
    }
    return {
        "acc_full": round(acc_full, 4),
        "acc_full_upper": round(full["individual"], 4),
        "bwt": round(bwt, 4),
        "acc_by_width": {f"{f:g}": [round(row["ours"], 4), round(row["individual"], 4)] for f, row in rows.items()},
        "bwt_by_width": {f"{f:g}": round(row["bwt"], 4) for f, row in rows.items()},
        "unseen_width": [{"fraction": f, "widths": rows[f]["widths"], "ours": round(rows[f]["ours"], 4),
                          "individual": round(rows[f]["individual"], 4)} for f in unseen],
        "stored_params": stored,
        "individual_params_total": individual_total,
        "gen_ms_full": round(full["gen_ms"], 2),
        "minutes_per_seed": round(float(np.mean(seconds_per_seed)) / 60, 2),
        "seeds": len(results),
        "stream": f"{results[0]['stream']['name']} ({results[0]['stream']['scenario']}-incremental)",
        "targets": targets,
        "rows": {f"{f:g}": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                 for f, row in rows.items()},
    }


def render(figs: dict):
    from rich.table import Table

    table = Table(title=f"NeuMeta at any width · {figs['stream']} · mean ± std over {figs['seeds']} seed(s) "
                        "(accuracy on every task after the whole stream)")
    for col in ("width", "channels", "params / net", "NeuMeta", "individual", "gap (pts)", "BWT", "gen ms"):
        table.add_column(col, justify="right")
    for f, row in sorted(figs["rows"].items(), key=lambda kv: float(kv[0])):
        name = f"{float(f):.1%}" + (" (unseen)" if row["unseen"] else "")
        table.add_row(name, str(row["widths"]), f"{row['params']:,}", f"{row['ours']:.4f} ± {row['ours_std']:.4f}",
                      f"{row['individual']:.4f} ± {row['individual_std']:.4f}",
                      f"{100 * (row['ours'] - row['individual']):+.2f}", f"{row['bwt']:+.4f}", f"{row['gen_ms']:.1f}")
    return table


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="from_dirs", nargs="+",
                   help="neumeta_widths output folder(s) to summarise together (e.g. seeds run in parallel)")
    p.add_argument("--seeds", nargs="+", type=int, help="override the experiment's seeds")
    p.add_argument("--quick", action="store_true", help="a smoke run on scikit-learn digits, one seed")
    p.add_argument("--baselines", nargs="+", metavar="DIR",
                   help="reuse the individually trained networks of earlier runs (same stream, model and training "
                        "settings) for the seeds they cover; their training time still counts per seed")
    p.add_argument("--out", default="runs")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE applied to every run")
    args = p.parse_args(argv)

    from neumeta_cl.config import load
    from neumeta_cl.experiment import load_experiment, run_experiment
    from neumeta_cl.report import table
    from neumeta_cl.tracking.results import load_results, write_json_atomic

    def read_saved(folders) -> dict:
        saved = {"runs": [], "individuals": [], "seconds_per_seed": []}
        for folder in folders:
            for key, values in json.loads((Path(folder) / "individual.json").read_text()).items():
                saved[key] += values
        return saved

    if args.from_dirs:
        out = Path(args.from_dirs[0])
        saved = read_saved(args.from_dirs)
    else:
        def reused(seed: int) -> dict | None:  # read when needed: those runs may still be finishing
            if not args.baselines:
                return None
            old = read_saved(args.baselines)
            return {load_results(r)["seed"]: ind for r, ind in zip(old["runs"], old["individuals"])}.get(seed)
        spec = load_experiment("neumeta_widths")
        extra = [*(QUICK if args.quick else []), *args.overrides, "train.progress_bar=false"]
        seeds = args.seeds or ([0] if args.quick else spec["seeds"])
        saved, out = {"runs": [], "individuals": [], "seconds_per_seed": []}, None
        for seed in seeds:  # one experiment per seed, so that each seed's wall time is measured
            t0 = time.perf_counter()
            res = run_experiment("neumeta_widths", extra, args.out, seeds=[seed])
            out = out or res.out_dir
            run = res.runs["neumeta"][0]
            strategy = load_results(run.results_path)["config"]["strategy"]
            fractions = sorted({*map(float, strategy["eval_fractions"]), *map(float, strategy["widths_unseen"])})
            cfg = load([*spec["overrides"], *spec["strategies"]["neumeta"], f"seed={seed}", *extra])
            seconds = time.perf_counter() - t0
            individuals = reused(seed) or train_individuals(cfg, fractions)
            if individuals["fractions"] != fractions:
                raise SystemExit(f"--baselines: seed {seed} was trained at widths {individuals['fractions']}, "
                                 f"this run evaluates {fractions}.")
            saved["individuals"].append(individuals)
            saved["runs"].append(str(run.results_path))
            saved["seconds_per_seed"].append(seconds + individuals["seconds"])
            write_json_atomic(out / "individual.json", saved)  # kept current: a stopped run loses no seed
    results = [load_results(p) for p in saved["runs"]]
    figs = figures(results, saved["individuals"], saved["seconds_per_seed"])
    console = table.console()
    console.print(render(figs))
    console.print(f"results: {out}")
    missed = [k for k, ok in figs["targets"].items() if not ok]
    console.print("targets: " + ("all met" if not missed else "not met: " + ", ".join(missed)))
    print(json.dumps(figs))
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
