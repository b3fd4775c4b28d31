"""NeuMeta at any width against networks trained individually: the ``neumeta_widths`` experiment.

For every seed, every task and every evaluated width (the strategy's ``eval_fractions`` and its
held-out ``widths_unseen``), a network of that width is trained on that task alone, with the same
optimizer and epochs (``train_individuals``): the task-incremental upper bound at that width.
``figures`` compares them with the networks the one INR generates after the whole stream, gives the
backward transfer of the generated networks at each width and checks the experiment's targets;
``render`` makes the table. ``run_seeds`` runs it all, seed by seed; ``scripts/neumeta_widths.py``
is the command line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from neumeta_cl.errors import ConfigError
from neumeta_cl.report.stats import mean_std, plain_std

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
    threads = torch.get_num_threads()
    if t.threads:
        torch.set_num_threads(int(t.threads))
    try:
        stream = build_stream_from(cfg)
        layout = TargetLayout.from_net(build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes,
                                                   stream.heads))
        optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay)
        out = {"fractions": fractions, "accuracy": [], "params": [], "widths": [], "seconds": 0.0,
               "seconds_by_width": [], "threads": torch.get_num_threads()}
        t0 = time.perf_counter()
        for f in fractions:
            t_width = time.perf_counter()
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
            out["seconds_by_width"].append(time.perf_counter() - t_width)
        out["seconds"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)  # the caller's setting again, even after an error
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


def _std(values) -> float:
    """Sample std (ddof=1, report.stats); 0.0 for one seed so the JSON line stays plain numbers."""
    return plain_std(mean_std(values)[1])


def training_seconds(result: dict) -> float:
    """A NeuMeta run's training time: per experience its teacher, its warm-up and its training
    epochs (not the evaluations and width sweeps, which the individual networks do not have)."""
    return float(sum(e["train_seconds"] + e["strategy"].get("teacher_seconds", 0.0)
                     + e["strategy"].get("recon_seconds", 0.0) for e in result["experiences"]))


def paced_ratio(neumeta_seconds: float, teacher_fit_seconds: float, individual_seconds: float,
                individual_teacher_seconds: float) -> float:
    """The training-time ratio with each side counted in its own teacher-sized networks.

    NeuMeta's teachers and the individual networks of the teachers' width (full width unless
    ``teacher_width`` says otherwise) train the same network the same way (widths, epochs, batch,
    optimizer, threads), but in two phases of the run, one after the other. If the machine runs at
    another speed in one phase (shared hosts do), the plain ratio moves with it. Dividing each side
    by those networks' seconds cancels a speed that is constant within each phase:

        (neumeta_seconds / teacher_fit_seconds) / (individual_seconds / individual_teacher_seconds)
    """
    return (neumeta_seconds / teacher_fit_seconds) / (individual_seconds / individual_teacher_seconds)


def figures(results: list[dict], individuals: list[dict], seconds_per_seed: list[float]) -> dict:
    """The experiment's numbers from each seed's results.json and its individually trained networks.

    ``train_time_ratio``: NeuMeta's training seconds (``training_seconds``) over those of the
    individual networks it replaces, summed over seeds. It is only a fair ratio when both were
    trained in the same run (``train_time_same_run``: no individuals reused with --baselines).
    ``train_time_ratio_paced``: the same with each side over its networks of the teachers' width (``paced_ratio``)."""
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
                   "ours": mean_std(ours)[0], "ours_std": _std(ours),
                   "individual": mean_std(ind)[0], "individual_std": _std(ind),
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
    neumeta_seconds = sum(map(training_seconds, results))
    individual_seconds = sum(i["seconds"] for i in individuals)
    ratio = round(neumeta_seconds / individual_seconds, 3)
    paced = None  # runs from before the timings it needs were recorded have none
    # The yardstick: the teachers' epochs, against the individual networks of the teachers' width
    # (``teacher_width``; teachers may train fewer epochs than they do).
    fits = [e["strategy"].get("teacher_fit_seconds", 0.0) / max(1, r["config"]["strategy"]["teacher_epochs"])
            * r["config"]["train"]["epochs"] for r in results for e in r["experiences"]]
    teacher_width = float(results[0]["config"]["strategy"].get("teacher_width", 1.0))
    if teacher_width in fractions and all(fits) and all("seconds_by_width" in i for i in individuals):
        k = fractions.index(teacher_width)
        paced = round(paced_ratio(neumeta_seconds, sum(fits), individual_seconds,
                                  sum(i["seconds_by_width"][k] for i in individuals)), 3)
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
        "train_time_ratio": ratio,
        "train_time_ratio_paced": paced,
        "train_time_same_run": not any(i.get("reused") for i in individuals),
        "seeds": len(results),
        "stream": f"{results[0]['stream']['name']} ({results[0]['stream']['scenario']}-incremental)",
        "targets": targets,
        "rows": {f"{f:g}": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                 for f, row in rows.items()},
    }


def render(figs: dict):
    from rich.table import Table

    table = Table(title=f"NeuMeta at any width · {figs['stream']} · mean ± sample std (ddof=1) over {figs['seeds']} seed(s) "
                        "(accuracy on every task after the whole stream)")
    for col in ("width", "channels", "params / net", "NeuMeta", "individual", "gap (pts)", "BWT", "gen ms"):
        table.add_column(col, justify="right")
    for f, row in sorted(figs["rows"].items(), key=lambda kv: float(kv[0])):
        name = f"{float(f):.1%}" + (" (unseen)" if row["unseen"] else "")
        table.add_row(name, str(row["widths"]), f"{row['params']:,}", f"{row['ours']:.4f} ± {row['ours_std']:.4f}",
                      f"{row['individual']:.4f} ± {row['individual_std']:.4f}",
                      f"{100 * (row['ours'] - row['individual']):+.2f}", f"{row['bwt']:+.4f}", f"{row['gen_ms']:.1f}")
    return table


def read_saved(folders) -> dict:
    """The runs, individually trained networks and seconds per seed saved in output folders."""
    saved = {"runs": [], "individuals": [], "seconds_per_seed": []}
    for folder in folders:
        for key, values in json.loads((Path(folder) / "individual.json").read_text()).items():
            saved[key] += values
    return saved


def _saved_by_run(out: Path) -> dict:
    """results.json path -> (individual networks, seconds of the seed) saved in ``out`` by an earlier call."""
    if not (out / "individual.json").exists():
        return {}
    old = read_saved([out])
    return {r: (ind, sec) for r, ind, sec in zip(old["runs"], old["individuals"], old["seconds_per_seed"])}


def run_seeds(overrides: list[str] | None = None, out_root="runs", seeds: list[int] | None = None,
              baselines: list | None = None, quick: bool = False) -> tuple[dict, Path]:
    """Run the experiment one seed at a time (so that each seed's wall time is measured) and train
    the individual networks of each seed, or reuse those of ``baselines`` (earlier output folders)
    for the seeds they cover. ``quick``: a smoke run on scikit-learn digits, seed 0 unless given.
    Returns what ``read_saved`` reads back, and the output folder (``individual.json`` in it is
    kept current: a stopped run loses no seed, and a rerun reuses what a finished seed saved)."""
    from omegaconf import OmegaConf
    from neumeta_cl.experiment import load_experiment, run_experiment
    from neumeta_cl.tracking.results import load_results, write_json_atomic

    def reused(seed: int) -> dict | None:  # read when needed: those runs may still be finishing
        if not baselines:
            return None
        old = read_saved(baselines)
        return {load_results(r)["seed"]: ind for r, ind in zip(old["runs"], old["individuals"])}.get(seed)
    spec = load_experiment("neumeta_widths")
    extra = [*(QUICK if quick else []), *(overrides or []), "train.progress_bar=false"]
    seeds = seeds or ([0] if quick else [int(s) for s in spec.axis("seed").labels])
    saved, out, earlier = {"runs": [], "individuals": [], "seconds_per_seed": []}, None, None
    for seed in seeds:
        t0 = time.perf_counter()
        res = run_experiment("neumeta_widths", extra, out_root, seeds=[seed])
        if out is None:  # what an earlier call saved here, read before this one writes
            out = res.out_dir
            earlier = _saved_by_run(out)
        run = res.runs["neumeta"][0]
        config = load_results(run.results_path)["config"]
        strategy = config["strategy"]
        fractions = sorted({*map(float, strategy["eval_fractions"]), *map(float, strategy["widths_unseen"])})
        # The individual networks train on the NeuMeta run's own resolved config, threads included
        # (those the launcher gave it), so that the time ratio compares like with like.
        cfg = OmegaConf.create(config)
        seconds = time.perf_counter() - t0
        key = str(run.results_path)
        if key in earlier:  # a rerun: this very run's networks were trained, and the seed timed, before
            individuals, seed_seconds = earlier[key]
        else:
            old = reused(seed)
            individuals = {**old, "reused": True} if old else train_individuals(cfg, fractions)
            if individuals["fractions"] != fractions:
                raise ConfigError(f"--baselines: seed {seed} was trained at widths {individuals['fractions']}, "
                                  f"this run evaluates {fractions}.")
            seed_seconds = seconds + individuals["seconds"]
        saved["individuals"].append(individuals)
        saved["runs"].append(key)
        saved["seconds_per_seed"].append(seed_seconds)
        write_json_atomic(out / "individual.json", saved)
    return saved, out


def summarise(saved: dict) -> dict:
    """``figures`` of saved runs (``run_seeds`` or ``read_saved``)."""
    from neumeta_cl.tracking.results import load_results

    return figures([load_results(p) for p in saved["runs"]], saved["individuals"], saved["seconds_per_seed"])


def missed_targets(figs: dict) -> list[str]:
    return [k for k, ok in figs["targets"].items() if not ok]
