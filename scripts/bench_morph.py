"""How fast are the morph operators, and how well do the preserving ones preserve? One table.

Builds two realistic nets, trains each briefly on real Fashion-MNIST so weights and BatchNorm
running statistics are non-trivial, then applies every morph operator (one row per operator and
arguments) and prints its MorphReport:

  * MLP 784-256-256-10 (``configs/model/mlp.yaml``), 1 epoch of SGD on 20k training images;
  * the default CNN (``configs/model/cnn.yaml``: channels [32, 64], BatchNorm), 1 epoch on 10k;
  * each also as a 5-head task-incremental net (5 heads x 2 classes, split Fashion-MNIST labels)
    for the operators that involve the heads: add_head (only makes sense there), widen and prune of
    the last hidden layer (which feeds every head).

The probe is 256 real test images (with their task labels for the multi-head nets); the
preservation error is MorphReport's max |f_before(x) - f_after(x)| with both nets in eval mode.
Each operator is called once to warm up (the first FlopCounterMode call in a process costs ~1 s)
and then ``--repeats`` times; the table shows the median. ``wall ms`` is MorphReport.wall_ms, the
edit itself (deep copy + surgery + ParamMap); ``call ms`` is the whole call, which adds the
report's accounting (FLOP counting, probe forwards) and, for prune with data, the accuracy passes.

Targets (from the issue): every structural operator under 20 ms on the MLP. ``replace_block``
trains a distillation (``steps`` Adam steps), so it is reported separately
(``replace_block_ms_mlp``) and is NOT part of ``max_ms_mlp``. Operators that claim preservation
should move the function by less than 1e-5 on the probe (``max_preservation_error``).

The last line on stdout is JSON for tools and CI.

    python scripts/bench_morph.py                  # Fashion-MNIST nets, median of 5
    python scripts/bench_morph.py --quick          # scikit-learn digits (8x8), a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from neumeta_cl.data import load_dataset
from neumeta_cl.morph import add_head, deepen, extend_classes, prune, replace_block, set_activation, widen
from neumeta_cl.morph.report import has_batchnorm, mode
from neumeta_cl.nets import build_model

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 20.0
TARGET_PRESERVATION = 1e-5
N_HEADS = 5


# --- nets -----------------------------------------------------------------------------------------


def model_cfg(name: str) -> dict:
    path = REPO / "configs" / "model" / f"{name}.yaml"
    if path.exists():
        return yaml.safe_load(path.read_text())
    return {"mlp": {"name": "mlp", "widths": [256, 256], "activation": "relu"},
            "cnn": {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "batchnorm": True, "activation": "relu"}}[name]


def split_labels(y: torch.Tensor, multi: bool):
    """Single head: (y, t=0). Multi-head: split labels into 5 tasks of 2 classes: (y % 2, y // 2)."""
    if multi:
        return y % 2, y // 2
    return y, torch.zeros_like(y)


def train(net, x, y, t, epochs: int, batch_size: int = 128, lr: float = 0.05, seed: int = 0) -> float:
    """Plain SGD with momentum; returns seconds."""
    t0 = time.perf_counter()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            idx = perm[s:s + batch_size]
            loss = F.cross_entropy(net(x[idx], t[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return time.perf_counter() - t0


def accuracy(net, x, y, t, batch_size: int = 1000) -> float:
    correct = 0
    with torch.no_grad(), mode(net, False):
        for s in range(0, len(x), batch_size):
            correct += int((net(x[s:s + batch_size], t[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum())
    return correct / len(x)


# --- the operator rows ----------------------------------------------------------------------------


def rows_for(kind: str, net, multi_net, ds, steps: int | None):
    """(net label, op name, args text, callable(net, probe) -> MorphResult, which net) per row."""
    w0, w_last, last = net.widths[0], net.widths[-1], net.depth - 1
    x_tr = ds.x_train
    y1, t1 = split_labels(ds.y_train[:1024], False)
    data1 = (x_tr[:1024], y1, t1)
    ym, tm = split_labels(ds.y_train[:1024], True)
    data_m = (x_tr[:1024], ym, tm)
    data_x = x_tr[:2048]
    wide0, wide_last, half0 = int(1.5 * w0), int(1.5 * w_last), w0 // 2
    rb_kw = {} if steps is None else {"steps": steps}
    rb_steps = steps if steps is not None else 200  # replace_block's default
    s, m = kind, f"{kind}x{N_HEADS}h"
    return [
        (s, "widen", f"layer 0 -> {wide0}, init=copy", lambda n, p: widen(n, 0, wide0, init="copy", probe=p), net),
        (s, "widen", f"layer 0 -> {wide0}, init=zero", lambda n, p: widen(n, 0, wide0, init="zero", probe=p), net),
        (s, "widen", f"layer 0 -> {wide0}, init=random", lambda n, p: widen(n, 0, wide0, init="random", probe=p), net),
        (s, "deepen", "after layer 0", lambda n, p: deepen(n, 0, probe=p), net),
        *([(s, "deepen", "after layer 0, data_x=2048 (BN stats)", lambda n, p: deepen(n, 0, data_x=data_x, probe=p), net)]
          if has_batchnorm(net) else []),
        (s, "prune", "global l1 0.25", lambda n, p: prune(n, 0.25, criterion="l1", data=data1, probe=p), net),
        (s, "prune", "layer 0 l2 0.25", lambda n, p: prune(n, 0.25, layer=0, criterion="l2", data=data1, probe=p), net),
        (s, "prune", "global taylor 0.25, 1024 samples", lambda n, p: prune(n, 0.25, criterion="taylor", data=data1, probe=p), net),
        (s, "prune", "global fisher 0.25, 1024 samples", lambda n, p: prune(n, 0.25, criterion="fisher", data=data1, probe=p), net),
        (s, "extend_classes", "n_new=2", lambda n, p: extend_classes(n, 2, probe=p), net),
        (s, "set_activation", "gelu (all layers)", lambda n, p: set_activation(n, "gelu", probe=p), net),
        (s, "replace_block", f"layer 0 -> {half0}, 2048 samples, {rb_steps} steps",
         lambda n, p: replace_block(n, 0, half0, data_x=data_x, probe=p, **rb_kw), net),
        (m, "widen", f"layer {last} (feeds all heads) -> {wide_last}, init=copy",
         lambda n, p: widen(n, last, wide_last, init="copy", probe=p), multi_net),
        (m, "prune", "global l1 0.25", lambda n, p: prune(n, 0.25, criterion="l1", data=data_m, probe=p), multi_net),
        (m, "prune", "global taylor 0.25, 1024 samples",
         lambda n, p: prune(n, 0.25, criterion="taylor", data=data_m, probe=p), multi_net),
        (m, "add_head", "n_classes=2", lambda n, p: add_head(n, 2, probe=p), multi_net),
    ]


def time_op(fn, net, probe, repeats: int) -> dict:
    """One warm-up call, then ``repeats`` timed calls; medians and the last report."""
    fn(net, probe)
    walls, calls, accts = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn(net, probe)
        calls.append((time.perf_counter() - t0) * 1e3)
        walls.append(res.report.wall_ms)
        accts.append(res.report.accounting_ms)
    rep = res.report.to_dict()
    return {"report": rep, "wall_ms": statistics.median(walls), "wall_ms_min": min(walls), "wall_ms_max": max(walls),
            "call_ms": statistics.median(calls), "accounting_ms": statistics.median(accts)}


# --- formatting -----------------------------------------------------------------------------------


def si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def err(e) -> str:
    return "-" if e is None else f"{e:.2e}"


def table(rows: list[dict]) -> str:
    head = ["net", "op", "args", "wall ms", "call ms", "params before -> after", "FLOPs/sample before -> after",
            "pres. err (eval)", "err (train)", "claims", "acc before/after (prune)"]
    body = []
    for r in rows:
        rep, d = r["report"], r["report"]["detail"]
        acc = f"{d['acc_before']:.3f} / {d['acc_after']:.3f}" if "acc_before" in d else ""
        body.append([r["net"], r["op"], r["args"], f"{r['wall_ms']:.2f}", f"{r['call_ms']:.1f}",
                     f"{rep['params_before']:,} -> {rep['params_after']:,}",
                     f"{si(rep['flops_before'])} -> {si(rep['flops_after'])}",
                     err(rep["preservation_error"]), err(rep.get("preservation_error_train")),
                     "yes" if rep["claims_preservation"] else "no", acc])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(head), "-+-".join("-" * w for w in widths)]
    prev = None
    for b in body:
        if prev is not None and b[0] != prev:
            out.append("-+-".join("-" * w for w in widths))
        out.append(line(b))
        prev = b[0]
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scikit-learn digits (8x8) instead of Fashion-MNIST: a smoke run")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per operator after one warm-up (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: another process may hold a core)")
    ap.add_argument("--steps", type=int, default=None, help="replace_block distillation steps (default: the operator's, 200)")
    ap.add_argument("--rb-repeats", type=int, default=3,
                    help="timed calls for replace_block (it trains; default 3, capped by --repeats)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rb_repeats < 1:
        ap.error("--repeats and --rb-repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = "digits" if args.quick else "fmnist"
    ds = load_dataset(dataset)
    input_shape = ds.input_shape
    n_train = {"mlp": 20000, "cnn": 10000}
    batch = {"mlp": 128, "cnn": 32}  # the CNN learns slowly at first; smaller batches = more SGD steps for the same time
    epochs = 5 if args.quick else 1  # digits has 1437 training images; 5 epochs ~ 7k samples
    probe_x = ds.x_test[:256]

    print(f"# bench_morph: dataset={dataset} input={input_shape} threads={torch.get_num_threads()} "
          f"repeats={args.repeats} torch={torch.__version__}")
    results, nets_info = [], {}
    for kind in ("mlp", "cnn"):
        cfg = model_cfg(kind)
        built = {}
        for multi in (False, True):
            torch.manual_seed(args.seed)
            net = build_model(cfg, input_shape, ds.n_classes, [2] * N_HEADS if multi else None)
            n = min(n_train[kind], len(ds.x_train))
            y, t = split_labels(ds.y_train[:n], multi)
            secs = train(net, ds.x_train[:n], y, t, epochs, batch_size=batch[kind], seed=args.seed)
            yt, tt = split_labels(ds.y_test, multi)
            acc = accuracy(net, ds.x_test, yt, tt)
            label = f"{kind}x{N_HEADS}h" if multi else kind
            nets_info[label] = {"train_samples": n, "epochs": epochs, "batch_size": batch[kind], "train_s": round(secs, 2), "test_acc": round(acc, 4),
                                "widths": net.widths}
            print(f"# {label}: {cfg} heads={[2] * N_HEADS if multi else 'single'}; trained {epochs} epoch(s) of SGD "
                  f"(batch {batch[kind]}) on {n} samples in {secs:.1f} s; test acc {acc:.4f} ({len(yt)} test images)")
            built[multi] = net
        for label, op, argtext, fn, net in rows_for(kind, built[False], built[True], ds, args.steps):
            multi = net is built[True]
            probe = (probe_x, split_labels(ds.y_test[:256], multi)[1])
            r = time_op(fn, net, probe, min(args.repeats, args.rb_repeats) if op == "replace_block" else args.repeats)
            with torch.no_grad(), mode(net, False):
                scale = float(net(*probe).abs().max())
            r.update(net=label, op=op, args=argtext, logit_scale=scale)
            results.append(r)

    print()
    print(table(results))
    print("wall ms = MorphReport.wall_ms (the edit: deep copy + surgery + ParamMap; for taylor/fisher also their "
          "gradient pass), median; call ms = the whole call (adds FLOP counting, probe forwards and, for prune, the "
          "accuracy passes). acc = accuracy on the 1024 training samples passed as prune's data. err (train) = the "
          "same gap with both nets in train mode (BatchNorm nets only); 'claims' is about eval mode. "
          f"replace_block: median of {min(args.repeats, args.rb_repeats)} calls.")

    structural_mlp = [r for r in results if r["net"].startswith("mlp") and r["op"] != "replace_block"]
    slowest = max(structural_mlp, key=lambda r: r["wall_ms"])
    rb_mlp = next(r for r in results if r["net"] == "mlp" and r["op"] == "replace_block")
    rb_cnn = next(r for r in results if r["net"] == "cnn" and r["op"] == "replace_block")
    claiming = [r for r in results if r["report"]["claims_preservation"]]
    worst = max(claiming, key=lambda r: r["report"]["preservation_error"])
    max_pres = worst["report"]["preservation_error"]
    claiming_train = [r for r in claiming if r["report"].get("preservation_error_train") is not None]
    max_pres_train = max((r["report"]["preservation_error_train"] for r in claiming_train), default=None)

    ok_ms = slowest["wall_ms"] < TARGET_MS
    ok_pres = max_pres < TARGET_PRESERVATION
    print()
    print(f"Target: every structural operator < {TARGET_MS:g} ms on the MLP (median MorphReport.wall_ms; "
          f"replace_block excluded, see below): {'MET' if ok_ms else 'NOT MET'} -- slowest is "
          f"{slowest['net']} {slowest['op']} ({slowest['args']}) at {slowest['wall_ms']:.2f} ms "
          f"(whole call incl. accounting {slowest['call_ms']:.1f} ms).")
    slow_calls = [r for r in structural_mlp if r["call_ms"] >= TARGET_MS]
    print(f"  Whole-call view (edit + FLOP/probe accounting + prune accuracy passes): max "
          f"{max(r['call_ms'] for r in structural_mlp):.1f} ms; "
          + (f"{len(slow_calls)} MLP row(s) at or over {TARGET_MS:g} ms." if slow_calls else f"all under {TARGET_MS:g} ms."))
    print(f"replace_block (distillation, {rb_mlp['report']['detail']['steps']} Adam steps; NOT in max_ms_mlp): "
          f"MLP {rb_mlp['wall_ms']:.1f} ms ({'under' if rb_mlp['wall_ms'] < TARGET_MS else 'over'} {TARGET_MS:g} ms), "
          f"CNN {rb_cnn['wall_ms']:.1f} ms; kept: MLP '{rb_mlp['report']['detail']['kept']}', "
          f"CNN '{rb_cnn['report']['detail']['kept']}'.")
    print(f"Target: operators that claim preservation move the function < {TARGET_PRESERVATION:g} on the probe "
          f"(eval mode, both nets): {'MET' if ok_pres else 'NOT MET'} -- worst is {worst['net']} {worst['op']} "
          f"({worst['args']}) at {max_pres:.2e} (logits up to {worst['logit_scale']:.1f})."
          + (f" Train mode (BatchNorm batch statistics): max {max_pres_train:.2e}." if max_pres_train is not None else ""))

    per_op = {}
    for r in results:
        rep = r["report"]
        key = f"{r['net']}/{r['op']}[{r['args']}]"
        entry = {"wall_ms": round(r["wall_ms"], 4), "call_ms": round(r["call_ms"], 3),
                 "accounting_ms": round(r["accounting_ms"], 3),
                 "params": [rep["params_before"], rep["params_after"]], "flops": [rep["flops_before"], rep["flops_after"]],
                 "preservation_error": rep["preservation_error"], "preservation_error_train": rep.get("preservation_error_train"),
                 "claims_preservation": rep["claims_preservation"]}
        if "acc_before" in rep["detail"]:
            entry["acc_before"], entry["acc_after"] = rep["detail"]["acc_before"], rep["detail"]["acc_after"]
        per_op[key] = entry
    summary = {
        "dataset": dataset, "threads": torch.get_num_threads(), "repeats": args.repeats, "nets": nets_info,
        "max_ms_mlp": round(slowest["wall_ms"], 4), "max_ms_mlp_op": f"{slowest['net']}/{slowest['op']}[{slowest['args']}]",
        "max_call_ms_mlp": round(max(r["call_ms"] for r in structural_mlp), 3),
        "replace_block_ms_mlp": round(rb_mlp["wall_ms"], 3), "replace_block_ms_cnn": round(rb_cnn["wall_ms"], 3),
        "max_ms_cnn": round(max(r["wall_ms"] for r in results if r["net"].startswith("cnn") and r["op"] != "replace_block"), 4),
        "max_preservation_error": max_pres, "max_preservation_error_op": f"{worst['net']}/{worst['op']}[{worst['args']}]",
        "max_preservation_error_train": max_pres_train,
        "target_ms": TARGET_MS, "target_ms_met": ok_ms, "replace_block_target_ms_met": rb_mlp["wall_ms"] < TARGET_MS,
        "target_preservation": TARGET_PRESERVATION, "target_preservation_met": ok_pres,
        "per_op": per_op,
    }
    print(json.dumps(summary, separators=(",", ":")))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
