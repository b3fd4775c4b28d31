"""The morph benchmark behind ``scripts/bench_morph.py``: how fast are the operators, what does
their report's accounting cost, and how well do the preserving ones preserve?

Builds two realistic nets, trains each briefly so weights and BatchNorm running statistics are
non-trivial, then applies every morph operator (one row per operator and arguments) and keeps its
MorphReport:

  * MLP 784-256-256-10 (``configs/model/mlp.yaml``), 1 epoch of SGD on 20k training images;
  * the default CNN (``configs/model/cnn.yaml``: channels [32, 64], BatchNorm), 1 epoch on 10k;
  * each also as a 5-head task-incremental net (5 heads x 2 classes, split labels) for the
    operators that involve the heads: add_head (only makes sense there), widen and prune of the last
    hidden layer (which feeds every head).

The probe is what a run uses: the first ``morph.probe_size`` (64) test images, with their task
labels for the multi-head nets, in eval mode (``morph.train_mode_gap`` is off by default). Each
operator is called once to warm up and then ``repeats`` times; rows hold medians. ``wall_ms`` is
MorphReport.wall_ms (the edit: deep copy + surgery + ParamMap), ``accounting_ms`` its FLOP counting
and probe forwards, ``call_ms`` the whole call (adds, for prune with data, the accuracy passes). The
train-mode gap of BatchNorm nets is measured once more after the timed calls, outside them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
import yaml

from neumeta_cl.paths import config_dir
from neumeta_cl.data import load_dataset
from neumeta_cl.morph.deepen import deepen
from neumeta_cl.morph.prune import prune
from neumeta_cl.morph.report import Probe, has_batchnorm, mode, output_gap
from neumeta_cl.morph.swap import add_head, extend_classes, replace_block, set_activation
from neumeta_cl.morph.widen import widen
from neumeta_cl.nets import build_model
from neumeta_cl.nets.evaluation import tensor_accuracy

TARGET_MS = 20.0  # every structural operator on the MLP (median wall_ms), replace_block excluded
TARGET_PRESERVATION = 1e-5  # operators that claim preservation, eval mode
TARGET_ACCOUNTING_MS = {"mlp": 10.0, "cnn": 50.0}  # the report's accounting, max over a net's rows
N_HEADS = 5
N_TRAIN = {"mlp": 20000, "cnn": 10000}
BATCH = {"mlp": 128, "cnn": 32}  # the CNN learns slowly at first; smaller batches = more SGD steps for the same time
PROBE_SIZE = yaml.safe_load((config_dir() / "config.yaml").read_text())["morph"]["probe_size"]  # a run's probe
KINDS = ("mlp", "cnn")
_DEFAULT_CFG = {"mlp": {"name": "mlp", "widths": [256, 256], "activation": "relu"},
                "cnn": {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "batchnorm": True, "activation": "relu"}}


# --- nets -----------------------------------------------------------------------------------------


def model_cfg(name: str) -> dict:
    path = config_dir() / "model" / f"{name}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else dict(_DEFAULT_CFG[name])


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


def trained_nets(kind: str, ds, epochs: int, seed: int = 0, log: Callable[[str], None] | None = None):
    """{False: single-head net, True: 5-head net} of ``kind``, trained; and {label: what was done}."""
    cfg = model_cfg(kind)
    nets, info = {}, {}
    for multi in (False, True):
        torch.manual_seed(seed)
        net = build_model(cfg, ds.input_shape, ds.n_classes, [2] * N_HEADS if multi else None)
        n = min(N_TRAIN[kind], len(ds.x_train))
        y, t = split_labels(ds.y_train[:n], multi)
        secs = train(net, ds.x_train[:n], y, t, epochs, batch_size=BATCH[kind], seed=seed)
        yt, tt = split_labels(ds.y_test, multi)
        acc = tensor_accuracy(net, ds.x_test, yt, tt, batch_size=1000)
        label = f"{kind}x{N_HEADS}h" if multi else kind
        info[label] = {"train_samples": n, "epochs": epochs, "batch_size": BATCH[kind], "train_s": round(secs, 2),
                       "test_acc": round(acc, 4), "widths": net.widths}
        if log:
            log(f"# {label}: {cfg} heads={[2] * N_HEADS if multi else 'single'}; trained {epochs} epoch(s) of SGD "
                f"(batch {BATCH[kind]}) on {n} samples in {secs:.1f} s; test acc {acc:.4f} ({len(yt)} test images)")
        nets[multi] = net
    return nets, info


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
    if has_batchnorm(net):  # outside the timed calls: a run measures it only with morph.train_mode_gap
        rep["preservation_error_train"] = output_gap(net, res.net, probe, train=True)
    return {"report": rep, "wall_ms": statistics.median(walls), "wall_ms_min": min(walls), "wall_ms_max": max(walls),
            "call_ms": statistics.median(calls), "accounting_ms": statistics.median(accts)}


# --- the run --------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    dataset: str
    repeats: int
    rb_repeats: int  # timed calls of replace_block (it trains)
    nets: dict = field(default_factory=dict)  # label -> how it was trained
    rows: list[dict] = field(default_factory=list)  # one per operator and arguments
    summary: dict = field(default_factory=dict)  # what the JSON line holds


def run(dataset: str = "fmnist", repeats: int = 5, steps: int | None = None, rb_repeats: int = 3, seed: int = 0,
        epochs: int | None = None, kinds=KINDS, log: Callable[[str], None] | None = None) -> BenchResult:
    """Train the nets of ``kinds`` on ``dataset`` and time every operator on them. ``epochs`` None:
    1 on Fashion-MNIST, 5 on digits (1437 training images). ``log`` gets a line per trained net."""
    torch.manual_seed(seed)
    ds = load_dataset(dataset)
    epochs = epochs if epochs is not None else (1 if dataset == "fmnist" else 5)
    rb_repeats = min(repeats, rb_repeats)
    probe_x = ds.x_test[:PROBE_SIZE]
    out = BenchResult(dataset=dataset, repeats=repeats, rb_repeats=rb_repeats)
    for kind in kinds:
        nets, info = trained_nets(kind, ds, epochs, seed, log)
        out.nets.update(info)
        for label, op, argtext, fn, net in rows_for(kind, nets[False], nets[True], ds, steps):
            multi = net is nets[True]
            probe = Probe(probe_x, split_labels(ds.y_test[:PROBE_SIZE], multi)[1])
            r = time_op(fn, net, probe, rb_repeats if op == "replace_block" else repeats)
            with torch.no_grad(), mode(net, False):
                scale = float(net(probe.x, probe.t).abs().max())
            r.update(net=label, op=op, args=argtext, logit_scale=scale)
            out.rows.append(r)
    out.summary = summarize(out)
    return out


def _key(r: dict) -> str:
    return f"{r['net']}/{r['op']}[{r['args']}]"


def _of(rows, kind: str, structural: bool = False) -> list[dict]:
    """Rows of the ``kind`` nets (single- and multi-head); structural: without replace_block (it trains)."""
    return [r for r in rows if r["net"].split("x")[0] == kind and not (structural and r["op"] == "replace_block")]


def summarize(res: BenchResult) -> dict:
    rows = res.rows
    summary = {"dataset": res.dataset, "threads": torch.get_num_threads(), "repeats": res.repeats, "nets": res.nets}
    if any(r["net"].startswith("mlp") for r in rows):
        slowest = max(_of(rows, "mlp", structural=True), key=lambda r: r["wall_ms"])
        summary.update({
            "max_ms_mlp": round(slowest["wall_ms"], 4), "max_ms_mlp_op": _key(slowest),
            "max_call_ms_mlp": round(max(r["call_ms"] for r in _of(rows, "mlp", structural=True)), 3),
            "target_ms": TARGET_MS, "target_ms_met": slowest["wall_ms"] < TARGET_MS,
        })
    if any(r["net"].startswith("cnn") for r in rows):
        summary["max_ms_cnn"] = round(max(r["wall_ms"] for r in _of(rows, "cnn", structural=True)), 4)
    for kind in KINDS:
        rb = next((r for r in rows if r["net"] == kind and r["op"] == "replace_block"), None)
        if rb is not None:
            summary[f"replace_block_ms_{kind}"] = round(rb["wall_ms"], 3)
    if "replace_block_ms_mlp" in summary:
        summary["replace_block_target_ms_met"] = summary["replace_block_ms_mlp"] < TARGET_MS
    for kind in KINDS:  # accounting: every row, replace_block too (its accounting is the same as anyone's)
        if _of(rows, kind):
            worst = max(_of(rows, kind), key=lambda r: r["accounting_ms"])
            summary[f"max_accounting_ms_{kind}"] = round(worst["accounting_ms"], 3)
            summary[f"max_accounting_ms_{kind}_op"] = _key(worst)
            summary[f"target_accounting_ms_{kind}"] = TARGET_ACCOUNTING_MS[kind]
            summary[f"target_accounting_ms_{kind}_met"] = worst["accounting_ms"] < TARGET_ACCOUNTING_MS[kind]
    claiming = [r for r in rows if r["report"]["claims_preservation"]]
    if claiming:
        worst = max(claiming, key=lambda r: r["report"]["preservation_error"])
        max_pres = worst["report"]["preservation_error"]
        trained = [r["report"]["preservation_error_train"] for r in claiming
                   if r["report"].get("preservation_error_train") is not None]
        summary.update({
            "max_preservation_error": max_pres, "max_preservation_error_op": _key(worst),
            "max_preservation_error_train": max(trained, default=None),
            "target_preservation": TARGET_PRESERVATION, "target_preservation_met": max_pres < TARGET_PRESERVATION,
        })
    per_op = {}
    for r in rows:
        rep = r["report"]
        entry = {"wall_ms": round(r["wall_ms"], 4), "call_ms": round(r["call_ms"], 3),
                 "accounting_ms": round(r["accounting_ms"], 3),
                 "params": [rep["params_before"], rep["params_after"]], "flops": [rep["flops_before"], rep["flops_after"]],
                 "preservation_error": rep["preservation_error"], "preservation_error_train": rep.get("preservation_error_train"),
                 "claims_preservation": rep["claims_preservation"]}
        if "acc_before" in rep["detail"]:
            entry["acc_before"], entry["acc_after"] = rep["detail"]["acc_before"], rep["detail"]["acc_after"]
        per_op[_key(r)] = entry
    summary["per_op"] = per_op
    return summary


# --- text -----------------------------------------------------------------------------------------


def si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def err(e) -> str:
    return "-" if e is None else f"{e:.2e}"


def table(rows: list[dict]) -> str:
    head = ["net", "op", "args", "wall ms", "acct ms", "call ms", "params before -> after", "FLOPs/sample before -> after",
            "pres. err (eval)", "err (train)", "claims", "acc before/after (prune)"]
    body = []
    for r in rows:
        rep, d = r["report"], r["report"]["detail"]
        acc = f"{d['acc_before']:.3f} / {d['acc_after']:.3f}" if "acc_before" in d else ""
        body.append([r["net"], r["op"], r["args"], f"{r['wall_ms']:.2f}", f"{r['accounting_ms']:.1f}", f"{r['call_ms']:.1f}",
                     f"{rep['params_before']:,} -> {rep['params_after']:,}",
                     f"{si(rep['flops_before'])} -> {si(rep['flops_after'])}",
                     err(rep["preservation_error"]), err(rep.get("preservation_error_train")),
                     "yes" if rep["claims_preservation"] else "no", acc])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    rule = "-+-".join("-" * w for w in widths)
    out = [line(head), rule]
    prev = None
    for b in body:
        if prev is not None and b[0] != prev:
            out.append(rule)
        out.append(line(b))
        prev = b[0]
    return "\n".join(out)


def findings(res: BenchResult) -> list[str]:
    """The table's legend and one line per target, as printed under the table."""
    rows, s = res.rows, res.summary
    lines = [
        "wall ms = MorphReport.wall_ms (the edit: deep copy + surgery + ParamMap; for taylor/fisher also their "
        "gradient pass), median; acct ms = MorphReport.accounting_ms (FLOP counting and probe forwards), median; "
        "call ms = the whole call (adds the accounting and, for prune, the accuracy passes). acc = accuracy on the "
        "1024 training samples passed as prune's data. err (train) = the same gap with both nets in train mode "
        "(BatchNorm nets only); 'claims' is about eval mode. "
        f"replace_block: median of {res.rb_repeats} calls.",
        "",
    ]
    if "max_ms_mlp" in s:
        structural = _of(rows, "mlp", structural=True)
        slowest = next(r for r in structural if _key(r) == s["max_ms_mlp_op"])
        slow_calls = [r for r in structural if r["call_ms"] >= TARGET_MS]
        lines += [
            f"Target: every structural operator < {TARGET_MS:g} ms on the MLP (median MorphReport.wall_ms; "
            f"replace_block excluded, see below): {'MET' if s['target_ms_met'] else 'NOT MET'} -- slowest is "
            f"{slowest['net']} {slowest['op']} ({slowest['args']}) at {slowest['wall_ms']:.2f} ms "
            f"(whole call incl. accounting {slowest['call_ms']:.1f} ms).",
            f"  Whole-call view (edit + FLOP/probe accounting + prune accuracy passes): max {s['max_call_ms_mlp']:.1f} ms; "
            + (f"{len(slow_calls)} MLP row(s) at or over {TARGET_MS:g} ms." if slow_calls else f"all under {TARGET_MS:g} ms."),
        ]
    for kind in KINDS:
        if f"max_accounting_ms_{kind}" in s:
            lines.append(
                f"Target: the report's accounting (FLOPs + probe forwards) < {TARGET_ACCOUNTING_MS[kind]:g} ms on the "
                f"{kind.upper()} (median MorphReport.accounting_ms, every row): "
                f"{'MET' if s[f'target_accounting_ms_{kind}_met'] else 'NOT MET'} -- max {s[f'max_accounting_ms_{kind}']:.1f} ms "
                f"({s[f'max_accounting_ms_{kind}_op']}).")
    rb = {k: next((r for r in rows if r["net"] == k and r["op"] == "replace_block"), None) for k in KINDS}
    if rb["mlp"] and rb["cnn"]:
        m, c = rb["mlp"], rb["cnn"]
        lines.append(
            f"replace_block (distillation, {m['report']['detail']['steps']} Adam steps; NOT in max_ms_mlp): "
            f"MLP {m['wall_ms']:.1f} ms ({'under' if m['wall_ms'] < TARGET_MS else 'over'} {TARGET_MS:g} ms), "
            f"CNN {c['wall_ms']:.1f} ms; kept: MLP '{m['report']['detail']['kept']}', CNN '{c['report']['detail']['kept']}'.")
    if "max_preservation_error" in s:
        worst = next(r for r in rows if _key(r) == s["max_preservation_error_op"])
        train_max = s["max_preservation_error_train"]
        lines.append(
            f"Target: operators that claim preservation move the function < {TARGET_PRESERVATION:g} on the probe "
            f"(eval mode, both nets): {'MET' if s['target_preservation_met'] else 'NOT MET'} -- worst is {worst['net']} "
            f"{worst['op']} ({worst['args']}) at {s['max_preservation_error']:.2e} (logits up to {worst['logit_scale']:.1f})."
            + (f" Train mode (BatchNorm batch statistics): max {train_max:.2e}." if train_max is not None else ""))
    return lines


# --- this code against another version of it ------------------------------------------------------


def interleaved(fns: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Call every fn once to warm up, then ``repeats`` rounds of one call each, in alternating order.
    A fn returns its own figure in ms (e.g. a report's accounting_ms) or None to be timed whole."""
    for fn in fns.values():
        fn()
    out = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            ms = fns[name]()
            out[name].append(ms if ms is not None else (time.perf_counter() - t0) * 1e3)
    return out


def versus(old_report, old_prune, dataset: str = "fmnist", repeats: int = 9, seed: int = 0, epochs: int | None = None,
           kinds=KINDS, log: Callable[[str], None] | None = None) -> dict:
    """This code's morph accounting and Taylor/Fisher pruning against ``old_report`` / ``old_prune``
    (the same modules of another version), interleaved call by call on the same trained nets, so that
    the machine's changing speed hits both alike. Per bench row (replace_block excluded: its
    accounting is anyone's): both versions' ``finish`` on the same (before, after) pair, median
    accounting_ms; per Taylor/Fisher row also both versions' prune, median wall_ms. Also checks that
    both report the same params and FLOPs, preservation errors within 1e-5 and the same pruned net."""
    from neumeta_cl.morph import report as new_report
    from neumeta_cl.morph.prune import prune as new_prune

    ds = load_dataset(dataset)
    epochs = epochs if epochs is not None else (1 if dataset == "fmnist" else 5)
    probe_x = ds.x_test[:PROBE_SIZE]
    rows = []
    for kind in kinds:
        nets, _ = trained_nets(kind, ds, epochs, seed, log)
        for label, op, argtext, fn, net in rows_for(kind, nets[False], nets[True], ds, None):
            if op == "replace_block":
                continue
            multi = net is nets[True]
            probe = (probe_x, split_labels(ds.y_test[:PROBE_SIZE], multi)[1])
            res = fn(net, probe)
            rep = res.report
            close = lambda module: module.finish(op, net, res.net, res.param_map, dict(rep.detail), time.perf_counter(),
                                                 probe, rep.claims_preservation).report
            old, new = close(old_report), close(new_report)
            same = ((old.params_before, old.params_after, old.flops_before, old.flops_after)
                    == (new.params_before, new.params_after, new.flops_before, new.flops_after))
            gaps = [(o, n) for o, n in [(old.preservation_error, new.preservation_error),
                                        (old.preservation_error_train, new.preservation_error_train)] if o is not None or n is not None]
            times = interleaved({"old": lambda: close(old_report).accounting_ms, "new": lambda: close(new_report).accounting_ms}, repeats)
            row = {"net": label, "op": op, "args": argtext, "same_params_flops": same,
                   "max_gap_change": max(abs(o - n) for o, n in gaps) if gaps else 0.0,
                   "gaps_old": [o for o, _ in gaps], "gaps_new": [n for _, n in gaps],
                   "accounting_ms_old": statistics.median(times["old"]), "accounting_ms_new": statistics.median(times["new"])}
            criterion = rep.detail.get("criterion") if op == "prune" else None
            if criterion in ("taylor", "fisher"):
                ys, ts = split_labels(ds.y_train[:1024], multi)
                data = (ds.x_train[:1024], ys, ts)
                call = lambda p: p(net, 0.25, criterion=criterion, data=data).report.wall_ms
                walls = interleaved({"old": lambda: call(old_prune.prune), "new": lambda: call(new_prune)}, repeats)
                a, b = old_prune.prune(net, 0.25, criterion=criterion, data=data).net, new_prune(net, 0.25, criterion=criterion, data=data).net
                sa, sb = a.state_dict(), b.state_dict()
                row.update(wall_ms_old=statistics.median(walls["old"]), wall_ms_new=statistics.median(walls["new"]),
                           same_pruned_net=sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa))
            rows.append(row)
            if log:
                log(f"# {label} {op} ({argtext}): accounting {row['accounting_ms_old']:.1f} -> {row['accounting_ms_new']:.1f} ms"
                    + (f"; wall {row['wall_ms_old']:.1f} -> {row['wall_ms_new']:.1f} ms" if "wall_ms_old" in row else ""))
    summary = {"dataset": dataset, "threads": torch.get_num_threads(), "repeats": repeats}
    for kind in kinds:
        mine = [r for r in rows if r["net"].split("x")[0] == kind]
        if mine:
            o, n = max(r["accounting_ms_old"] for r in mine), max(r["accounting_ms_new"] for r in mine)
            ratios = [r["accounting_ms_new"] / r["accounting_ms_old"] for r in mine]
            summary.update({f"max_accounting_ms_{kind}_old": round(o, 2), f"max_accounting_ms_{kind}_new": round(n, 2),
                            f"max_accounting_ratio_{kind}": round(n / o, 3),  # a burst of load on one row moves this one
                            f"median_row_accounting_ratio_{kind}": round(statistics.median(ratios), 3)})
    for r in rows:
        if r["net"] == "mlpx5h" and "wall_ms_old" in r and "taylor" in r["args"]:
            summary.update(taylor_5head_mlp_wall_ms_old=round(r["wall_ms_old"], 2), taylor_5head_mlp_wall_ms_new=round(r["wall_ms_new"], 2),
                           taylor_5head_mlp_ratio=round(r["wall_ms_new"] / r["wall_ms_old"], 3))
    summary.update(same_params_flops=all(r["same_params_flops"] for r in rows),
                   same_pruned_nets=all(r.get("same_pruned_net", True) for r in rows),
                   max_preservation_error_change=max(r["max_gap_change"] for r in rows))
    return {"rows": rows, "summary": summary}
