"""Continuous paths and permutation symmetry: the study behind ``scripts/paths.py`` (experiments/paths.yaml).

``landscape_study``: two nets per architecture trained from different seeds on Fashion-MNIST;
loss barriers (``landscape.barrier``) of the straight line between them, naive and after weight /
activation matching, each plain and with REPAIR (the CNN also with the BatchNorm reset only); the
Bezier, polychain, ODE-flow and Fisher paths between the two unaligned MLPs; the time of one
alignment. ``rotated_study``: the experiment's strategies on Rotated-Fashion-MNIST (20 experiences),
seed by seed. ``figures`` turns both into the JSON line the script ends with.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from neumeta_cl.report.stats import json_pair

QUICK_KEYS = ("train_samples", "eval_samples", "stats_samples", "points", "mlp", "cnn", "curve", "flow", "fisher_samples")


def settings(spec: dict, quick: bool) -> dict:
    """The study's settings: ``landscape`` from the experiment, with ``quick`` merged over it."""
    s = copy.deepcopy(spec["landscape"])
    q = s.pop("quick")
    if quick:
        for k in QUICK_KEYS:
            if k in q:
                s[k] = {**s[k], **q[k]} if isinstance(s.get(k), dict) else q[k]
    s.setdefault("train_samples", None)
    return s


def cached_net(kind: str, cfg: dict, seed: int, x, y, folder: Path):
    """``train_net``'s result, kept in ``folder`` (keyed by its settings) so a rerun does not retrain."""
    import hashlib

    import torch

    from neumeta_cl.nets.structure import load_net, net_state

    key = hashlib.sha1(json.dumps([kind, cfg, seed, len(y)], sort_keys=True).encode()).hexdigest()[:10]
    file = folder / f"{kind}-s{seed}-{key}.pt"
    if file.exists():
        saved = torch.load(file, weights_only=True)
        return load_net(saved["net"]).eval(), saved["seconds"]
    net, seconds = train_net(kind, cfg, seed, x, y)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"net": net_state(net), "seconds": seconds}, file)
    return net, seconds


def train_net(kind: str, cfg: dict, seed: int, x, y):
    """An MLP or CNN trained with SGD (momentum) on (x, y) for cfg["epochs"] epochs."""
    import torch
    import torch.nn.functional as F

    from neumeta_cl.nets import CNN, MLP

    torch.manual_seed(seed)
    shape = tuple(x.shape[1:])
    net = MLP(shape, cfg["widths"], 10) if kind == "mlp" else CNN(shape, cfg["channels"], 10)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(cfg["batch_size"], dtype=torch.long)
    net.train()
    t0 = time.perf_counter()
    for _ in range(cfg["epochs"]):
        order = torch.randperm(len(y), generator=g)
        for s in range(0, len(y) - cfg["batch_size"] + 1, cfg["batch_size"]):
            idx = order[s:s + cfg["batch_size"]]
            loss = F.cross_entropy(net(x[idx], t), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval(), time.perf_counter() - t0


def barrier_grid(a, b, test, stats, points: int, batchnorm: bool, align_data, seed: int = 0) -> tuple[dict, list]:
    """Barrier of the line A -> B naive / weight-matched / activation-matched; plain, BN reset (BN nets), REPAIR."""
    from neumeta_cl.landscape import LinearPath, align, evaluate_path

    out, profiles = {}, []
    ends = {"naive": b, "weights": align(a, b, "weights", seed=seed).net,
            "activations": align(a, b, "activations", data=align_data).net}
    for method, b2 in ends.items():
        path = LinearPath(a, b2)
        variants = {"plain": {}}
        if batchnorm:
            variants["bn_reset"] = {"bn_data": stats}
        variants["repair"] = {"bn_data": stats if batchnorm else None, "repair_data": stats}
        out[method] = {}
        for variant, kw in variants.items():
            p = evaluate_path(path, test, points, tasks={"test": test}, label=f"{method} {variant}", **kw)
            out[method][variant] = p.barrier
            profiles.append(p)
    return out, profiles


def align_timing(s: dict, out: Path, repeats: int = 3) -> dict:
    """Median seconds of ``align`` (both methods) on the study's two MLPs (trained, or cached in out/nets)."""
    import torch

    from neumeta_cl.data import load_dataset
    from neumeta_cl.landscape import align

    d = load_dataset(s["dataset"])
    g = torch.Generator().manual_seed(0)
    n_train = s["train_samples"] or len(d.y_train)
    pick = torch.randperm(len(d.y_train), generator=g)[:n_train]
    x, y = d.x_train[pick], d.y_train[pick]
    a, b = [cached_net("mlp", s["mlp"], seed, x, y, out / "nets")[0] for seed in s["seeds"]]
    res = {}
    for method in ("weights", "activations"):
        runs = [align(a, b, method, data=x[: s["stats_samples"]]) for _ in range(repeats)]
        res[method] = float(np.median([r.seconds for r in runs]))
        res[f"{method}_sweeps"] = runs[0].sweeps
    return res


def landscape_study(s: dict, out: Path, log=print) -> dict:
    """Every landscape figure; ``out/landscape.json`` is rewritten after each part (MLP, paths, CNN)."""
    import torch

    from neumeta_cl.data import load_dataset
    from neumeta_cl.landscape import (CurvePath, FisherPath, FlowPath, LinearPath, align, diagonal_fisher,
                                      evaluate_path, loss_and_accuracy, plot_profiles, train_bend, train_flow)

    d = load_dataset(s["dataset"])
    g = torch.Generator().manual_seed(0)
    n_train = s["train_samples"] or len(d.y_train)
    pick = torch.randperm(len(d.y_train), generator=g)[:n_train]
    x, y = d.x_train[pick], d.y_train[pick]
    xe, ye = (d.x_test, d.y_test) if s["eval_on"] == "test" else (x, y)
    test = (xe[: s["eval_samples"]], ye[: s["eval_samples"]])
    stats = x[: s["stats_samples"]]
    res: dict = {"train_samples": n_train, "eval_on": s["eval_on"], "eval_samples": len(test[1]),
                 "stats_samples": len(stats), "points": s["points"], "settings": s}
    save = lambda: (out / "landscape.json").write_text(json.dumps(res))
    nets = out / "nets"

    # --- MLP: alignment and REPAIR ---
    seeds = s["seeds"]
    (a, ta), (b, tb) = [cached_net("mlp", s["mlp"], seed, x, y, nets) for seed in seeds]
    res["mlp_train_seconds"] = ta + tb
    res["mlp_endpoint_test"] = [loss_and_accuracy(n, *test) for n in (a, b)]
    times = {}
    for method in ("weights", "activations"):
        t0 = time.perf_counter()
        al = align(a, b, method, data=stats)
        times[method] = time.perf_counter() - t0
        res[f"mlp_align_{method}"] = al.summary()
    res["align_seconds"] = times
    res["mlp"], mlp_profiles = barrier_grid(a, b, test, stats, s["points"], False, stats)
    res["profiles"] = {"mlp": [p.to_dict() for p in mlp_profiles]}
    plot_profiles(mlp_profiles, out / "landscape_mlp.png", "MLP 784-" + "-".join(map(str, s["mlp"]["widths"])) + "-10 · line between two seeds")
    log(f"MLP barriers: {json.dumps(res['mlp'])}; alignment seconds {json.dumps(times)}")
    save()

    # --- paths between the two unaligned MLPs ---
    train = (x, y, torch.zeros(len(y), dtype=torch.long))
    c = s["curve"]
    paths = {"linear": LinearPath(a, b)}
    for kind in ("bezier", "polychain"):
        paths[kind] = train_bend(CurvePath(a, b, kind), train, c["steps"], c["lr"], batch_size=c["batch_size"], seed=seeds[0])
    paths["ode"] = train_flow(FlowPath.from_curve(paths["bezier"]), train, s["flow"]["steps"], c["lr"],
                              batch_size=c["batch_size"], seed=seeds[0] + 1)
    t0 = time.perf_counter()
    fa = diagonal_fisher(a, x[: s["fisher_samples"]])
    fb = diagonal_fisher(b, x[: s["fisher_samples"]], seed=1)
    fisher_seconds = time.perf_counter() - t0
    paths["fisher"] = FisherPath(a, b, fa, fb)
    curve_profiles, res["paths"] = [], {}
    for name, path in paths.items():
        p = evaluate_path(path, test, s["points"], tasks={"test": test}, label=name)
        curve_profiles.append(p)
        info = dict(path.describe())
        if name == "fisher":
            info["train_seconds"] = fisher_seconds
        res["paths"][name] = {"barrier": p.barrier, "mean_loss": float(np.mean(p.loss)),
                              "mid_test_acc": p.accuracy["test"][len(p.ts) // 2],
                              "train_seconds": info.get("train_seconds", 0.0), "info": info}
    res["profiles"]["paths"] = [p.to_dict() for p in curve_profiles]
    plot_profiles(curve_profiles, out / "landscape_paths.png", "paths between the two unaligned MLPs")
    log(f"paths: {json.dumps({k: round(v['barrier'], 4) for k, v in res['paths'].items()})}")
    save()

    # --- CNN with BatchNorm ---
    (ca, tca), (cb, tcb) = [cached_net("cnn", s["cnn"], seed, x, y, nets) for seed in seeds]
    res["cnn_train_seconds"] = tca + tcb
    cnn_test = (test[0][: s["cnn"]["eval_samples"]], test[1][: s["cnn"]["eval_samples"]])
    cnn_stats = stats[: s["cnn"]["stats_samples"]]
    res["cnn_endpoint_test"] = [loss_and_accuracy(n, *cnn_test) for n in (ca, cb)]
    res["cnn"], cnn_profiles = barrier_grid(ca, cb, cnn_test, cnn_stats, s["cnn"]["points"], True, cnn_stats)
    res["profiles"]["cnn"] = [p.to_dict() for p in cnn_profiles]
    plot_profiles(cnn_profiles, out / "landscape_cnn.png", "CNN " + str(s["cnn"]["channels"]) + " + BatchNorm · line between two seeds")
    log(f"CNN barriers: {json.dumps(res['cnn'])}")
    save()
    return res


def rotated_spec(spec: dict, quick: bool) -> dict:
    spec = copy.deepcopy(spec)
    if quick:
        q = spec["landscape"]["quick"]
        spec["overrides"], spec["seeds"] = list(q["overrides"]), list(q["seeds"])
    spec.pop("landscape")
    return spec


def rotated_study(spec: dict, out_root: Path, extra: list[str]):
    """Every strategy of the experiment, one seed at a time (a 20-experience stream holds ~4 GB;
    one seed's stream is kept in memory at a time)."""
    from neumeta_cl.data import clear_caches
    from neumeta_cl.experiment import run_experiment
    from neumeta_cl.report import table
    from neumeta_cl.tracking.results import load_results

    file = Path(tempfile.mkdtemp()) / f"{spec['name']}.yaml"
    import yaml

    file.write_text(yaml.safe_dump(spec))
    results: dict[str, list[dict]] = {}
    for seed in spec["seeds"]:
        res = run_experiment(str(file), extra, str(out_root), seeds=[seed])
        for label, runs in res.runs.items():
            results.setdefault(label, []).extend(load_results(r.results_path) for r in runs)
        clear_caches()
    order = list(spec["strategies"])
    return table.from_groups({k: results[k] for k in order}, title=spec.get("description")), results


def read_rotated(folder: Path, order: list[str]):
    """The summary of the finished runs under ``folder`` (a rotated study's output), by the
    experiment's row (its sweep label: ``flow`` and ``flow_mcsgd`` both run strategy=flow)."""
    from neumeta_cl.report import table
    from neumeta_cl.report.runs import find_runs

    files = sorted(Path(folder).glob("*/results.json"))
    results: dict[str, list[dict]] = {}
    for run in find_runs(files) if files else []:
        if run.finished:
            results.setdefault(run.value("strategy"), []).append(run.data)
    labels = [k for k in order if k in results]
    if not labels:
        return None, results
    return table.from_groups({k: results[k] for k in labels}), results


def figures(land: dict | None, summary=None) -> dict:
    """The JSON line: barrier reductions, path ratios, alignment time, ACC per strategy."""
    out: dict = {}
    if land is not None:
        mlp = land["mlp"]
        naive = mlp["naive"]["plain"]
        out["barrier_mlp"] = {m: {v: round(b, 4) for v, b in vs.items()} for m, vs in mlp.items()}
        if "cnn" in land:
            out["barrier_cnn"] = {m: {v: round(b, 4) for v, b in vs.items()} for m, vs in land["cnn"].items()}
        out["barrier_reduction_mlp"] = round(1 - mlp["weights"]["plain"] / naive, 4)
        out["barrier_reduction_mlp_repair"] = round(1 - mlp["weights"]["repair"] / naive, 4)
        out["barrier_reduction_mlp_activations"] = round(1 - mlp["activations"]["plain"] / naive, 4)
        out["barrier_reduction_mlp_activations_repair"] = round(1 - mlp["activations"]["repair"] / naive, 4)
        out["align_seconds"] = round(land["align_seconds"]["weights"], 3)
        out["align_seconds_activations"] = round(land["align_seconds"]["activations"], 3)
    if land is not None and "paths" in land:
        p = land["paths"]
        out["bezier_over_linear"] = round(p["bezier"]["barrier"] / p["linear"]["barrier"], 4)
        out["polychain_over_linear"] = round(p["polychain"]["barrier"] / p["linear"]["barrier"], 4)
        out["fisher_over_linear"] = round(p["fisher"]["barrier"] / p["linear"]["barrier"], 4)
        out["ode_over_bezier"] = round(p["ode"]["barrier"] / max(p["bezier"]["barrier"], 1e-12), 4)
        out["ode_over_bezier_mean_loss"] = round(p["ode"]["mean_loss"] / p["bezier"]["mean_loss"], 4)
        out["ode_train_seconds"] = round(p["ode"]["train_seconds"], 1)
        out["bezier_train_seconds"] = round(p["bezier"]["train_seconds"], 1)
    if summary is not None:
        rows = summary.frame().reset_index().to_dict(orient="records")  # sample std (ddof=1)
        out["acc_rotated20"] = {r["label"]: json_pair(r["acc_mean"], r["acc_std"]) for r in rows}
        out["forgetting_rotated20"] = {r["label"]: json_pair(r["forgetting_mean"], r["forgetting_std"]) for r in rows}
        acc = {r["label"]: r["acc_mean"] for r in rows}
        if {"flow", "ewc", "replay", "clewi"} <= set(acc):
            out["flow_minus_ewc"] = round(acc["flow"] - acc["ewc"], 4)
            out["flow_minus_replay"] = round(acc["flow"] - acc["replay"], 4)
            out["flow_minus_clewi"] = round(acc["flow"] - acc["clewi"], 4)
            out["rotated_target_met"] = bool(out["flow_minus_ewc"] >= 0.05 and out["flow_minus_replay"] >= 0.05
                                             and out["flow_minus_clewi"] > 0)
    return out


def log_wandb(mode: str, out: Path, land: dict | None, figs: dict) -> str | None:
    """The landscape figures and plots as one W&B run (offline by default); returns its folder."""
    if mode == "disabled" or land is None:
        return None
    import wandb

    run = wandb.init(project="neumeta_cl", name="paths-landscape", dir=str(out), mode=mode, reinit="finish_previous",
                     config={k: v for k, v in land.items() if k in ("train_samples", "eval_on", "points")})
    scalars = {}
    for arch in ("mlp", "cnn"):
        for method, variants in land.get(arch, {}).items():
            for variant, b in variants.items():
                scalars[f"barrier/{arch}/{method}/{variant}"] = b
    for name, p in land.get("paths", {}).items():
        scalars[f"barrier/path/{name}"] = p["barrier"]
        scalars[f"path_train_seconds/{name}"] = p["train_seconds"]
    scalars.update({f"figure/{k}": v for k, v in figs.items() if isinstance(v, (int, float))})
    for png in ("landscape_mlp.png", "landscape_cnn.png", "landscape_paths.png"):
        if (out / png).exists():
            scalars[f"plot/{png[:-4]}"] = wandb.Image(str(out / png))
    run.log(scalars)
    folder = run.dir
    run.finish()
    return folder


__all__ = ["settings", "align_timing", "cached_net", "train_net", "barrier_grid", "landscape_study", "rotated_spec", "rotated_study", "read_rotated", "figures",
           "log_wandb"]
