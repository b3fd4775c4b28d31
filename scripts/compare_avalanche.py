"""Our naive / ewc / replay next to Avalanche's Naive / EWC / Replay: same stream, net, init and numbers.

    python scripts/compare_avalanche.py                       # Split-Fashion-MNIST, 5 exps, seed 0
    python scripts/compare_avalanche.py --seeds 0 1 2         # mean differences over 3 seeds
    python scripts/compare_avalanche.py --quick               # split digits: a smoke run in seconds
    python scripts/compare_avalanche.py --strategies replay --set strategy.buffer_size=200

What is shared, per seed:
- the stream: Avalanche trains and evaluates on ``build_stream(...).benchmark``, the very benchmark
  object our tensors are materialised from (same experiences, class order, samples);
- the network: our recipe builds the MLP (seeded), a hook deep-copies it before any training, and
  Avalanche trains that copy. ``b`` (accuracy before training) must then agree exactly on both
  sides; the script checks it and reports ``b_max_abs_diff``;
- the numbers: both sides read one composed config (SGD lr/momentum, batch size, epochs, eval batch
  size, EWC lambda/mode, replay buffer size/policy and memory batch size).
What is not shared: the order of the training mini-batches (each side's own shuffling) and which
buffered samples each replay step draws. That is the noise the seeds measure.

Output: a table (strategy | ours ACC | Avalanche ACC | diff | ours BWT | Avalanche BWT), wall
seconds per side, then ONE line of JSON (last line of stdout) with ``max_acc_diff`` (the largest
|mean over seeds of ours - Avalanche| ACC, in accuracy points) and per strategy ACC/BWT of both.
ACC and BWT follow DESIGN.md (BWT averages over T-1 experiences, the GEM paper's convention).

Avalanche-side choices, and why:
- Naive:  ``avalanche.training.Naive``.
- EWC:    ``avalanche.training.EWC(ewc_lambda, mode)``; our ``online`` maps to Avalanche's
          ``online`` with ``decay_factor = strategy.decay``. Avalanche computes the Fisher with
          ``train_mb_size`` mini-batches; ours with ``strategy.fisher_batch_size`` (default: the
          train batch size), so a different fisher_batch_size is refused rather than compared.
- Replay: ``avalanche.training.Replay`` is exactly ``SupervisedTemplate`` + ``ReplayPlugin(mem_size)``
          with the experience-balanced buffer, and it does not forward ``storage_policy`` or
          ``batch_size_mem``. We therefore build ``Naive`` (= SupervisedTemplate) with
          ``ReplayPlugin(mem_size, batch_size_mem, storage_policy=ClassBalancedBuffer(mem_size,
          adaptive_size=True))`` (or ``ReservoirSamplingBuffer`` for ``policy=reservoir``).

FINDINGS (filled in from the runs listed at the end of this block)
------------------------------------------------------------------
See the "Findings" section below the imports.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

STRATEGIES = ("naive", "ewc", "replay")
DEFAULT_BENCHMARK = "split_fmnist"
QUICK_BENCHMARK = "split_digits"
QUICK_EPOCHS = 10  # digits has ~290 training samples per experience: 1 epoch is 3 SGD steps


# ----------------------------------------------------------------------------------------------
# Our side: the real recipe, with a hook that keeps a copy of the freshly built network.


def _capture_init_hook():
    """An ExperienceHook that deep-copies the network at run start (after b, before any training)."""
    from neumeta_cl.runner import ExperienceHook

    class CaptureInit(ExperienceHook):
        net = None

        def on_run_start(self, runner):
            self.net = copy.deepcopy(runner.net).cpu()

    return CaptureInit()


def config_overrides(benchmark: str, strategy: str, seed: int, epochs: int | None, ewc_lambda: float | None,
                     extra: list[str], device: str, output_dir: str) -> list[str]:
    """Hydra overrides for one of our runs; `extra` (``--set``) comes last so it wins."""
    o = [f"benchmark={benchmark}", f"strategy={strategy}", f"seed={seed}", "logger.mode=disabled",
         f"output_dir={output_dir}", f"run_name=compare-{strategy}-s{seed}", "train.progress_bar=false",
         f"train.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
         # The learning-curve probe only adds evaluations (no RNG use, no training change): off, so
         # our wall time is train + the same evaluations Avalanche does.
         "metrics.lca_beta=0", "metrics.curve_every_n_steps=0"]
    if epochs is not None:
        o.append(f"train.epochs={epochs}")
    if ewc_lambda is not None and strategy == "ewc":
        o.append(f"strategy.ewc_lambda={ewc_lambda}")
    return o + list(extra)


def run_ours(cfg):
    """(R, b, wall seconds, initial net) of one run of our recipe."""
    from neumeta_cl.run import run_continual

    capture = _capture_init_hook()
    t0 = time.perf_counter()
    result = run_continual(cfg, extra_hooks=[capture])
    seconds = time.perf_counter() - t0
    return np.asarray(result.outcome.R), np.asarray(result.outcome.b), seconds, capture.net


# ----------------------------------------------------------------------------------------------
# Avalanche's side.


def _avalanche_model(net, multi_head: bool):
    """Avalanche calls ``model(x)``, or ``model(x, task_labels)`` for a MultiTaskModule."""
    if not multi_head:
        return net  # our MLP's forward(x, t=None) is what Avalanche calls
    from avalanche.models import MultiTaskModule

    class TaskRouted(MultiTaskModule):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, task_labels):  # our multi-head net routes each sample itself
            if not torch.is_tensor(task_labels):
                task_labels = torch.full((len(x),), int(task_labels), dtype=torch.int64, device=x.device)
            return self.inner(x, task_labels)

    return TaskRouted(net)


def build_avalanche_strategy(name: str, model, cfg, device: str):
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import EWC, Naive
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer

    from neumeta_cl.errors import ConfigError
    from neumeta_cl.strategies import OptimConfig

    t, s = cfg.train, cfg.strategy
    optimizer = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay).build(model.parameters())
    common = dict(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=t.batch_size, train_epochs=t.epochs, eval_mb_size=t.eval_batch_size, device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )
    if name == "naive":
        return Naive(**common)
    if name == "ewc":
        if s.fisher_batch_size is not None and s.fisher_batch_size != t.batch_size:
            raise ConfigError("Avalanche's EWC computes the Fisher with train_mb_size mini-batches; "
                              "leave strategy.fisher_batch_size=null to compare.")
        decay = float(s.decay) if s.mode == "online" else None
        return EWC(ewc_lambda=float(s.ewc_lambda), mode=s.mode, decay_factor=decay, **common)
    if name == "replay":
        size = int(s.buffer_size)
        policy = (ClassBalancedBuffer(max_size=size, adaptive_size=True) if s.policy == "class_balanced"
                  else ReservoirSamplingBuffer(max_size=size))
        plugin = ReplayPlugin(mem_size=size, batch_size_mem=int(s.mem_batch_size or t.batch_size),
                              storage_policy=policy)
        return Naive(plugins=[plugin], **common)
    raise ConfigError(f"No Avalanche counterpart for strategy '{name}'; choose among {', '.join(STRATEGIES)}.")


_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


def _row(metrics: dict, T: int) -> np.ndarray:
    row = np.full(T, np.nan)
    for key, value in metrics.items():
        m = _EXP_KEY.match(key)
        if m:
            row[int(m.group(1))] = float(value)
    if np.isnan(row).any():
        raise RuntimeError(f"Avalanche reported no accuracy for some test experiences: {sorted(metrics)}")
    return row


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_avalanche(name: str, stream, net, cfg, device: str = "cpu", shuffle_seed: int = 0,
                  reset_optimizer: bool = False):
    """(R, b, wall seconds) of Avalanche's strategy on ``stream.benchmark``, starting from ``net``."""
    bm = stream.benchmark
    T = stream.n_experiences
    model = _avalanche_model(net, stream.heads is not None)
    strategy = build_avalanche_strategy(name, model, cfg, device)
    seed_all(shuffle_seed)  # Avalanche's loaders and buffers draw from the global generators
    train_kwargs = {"reset_optimizer_state": True} if reset_optimizer else {}
    R = np.full((T, T), np.nan)
    t0 = time.perf_counter()
    b = _row(strategy.eval(bm.test_stream), T)
    for i, exp in enumerate(bm.train_stream):
        strategy.train(exp, **train_kwargs)
        R[i] = _row(strategy.eval(bm.test_stream), T)
    return R, b, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# The comparison.


@dataclass
class Pair:
    """One strategy, one seed, both sides."""

    strategy: str
    seed: int
    ours_R: np.ndarray
    ours_b: np.ndarray
    avl_R: np.ndarray
    avl_b: np.ndarray
    ours_seconds: float
    avl_seconds: float
    avl_repeats: list[dict] = field(default_factory=list)  # extra Avalanche runs (other shuffle seeds)

    @staticmethod
    def _summary(R, b):
        from neumeta_cl.metrics import average_accuracy, backward_transfer, forward_transfer

        return {"acc": 100 * average_accuracy(R), "bwt": 100 * backward_transfer(R), "fwt": 100 * forward_transfer(R, b)}

    @property
    def ours(self):
        return self._summary(self.ours_R, self.ours_b)

    @property
    def avl(self):
        return self._summary(self.avl_R, self.avl_b)


def compare(benchmark: str = DEFAULT_BENCHMARK, strategies=STRATEGIES, seeds=(0,), epochs: int | None = None,
            ewc_lambda: float | None = None, extra: list[str] | None = None, device: str = "cpu",
            avalanche_repeats: int = 1, reset_optimizer: bool = False, log=print) -> dict:
    """Run every (strategy, seed) on both sides; returns the result dict that the JSON line prints."""
    from neumeta_cl.config import load
    from neumeta_cl.run import build_stream_from

    warnings.filterwarnings("ignore", module="avalanche")
    warnings.filterwarnings("ignore", category=UserWarning)
    pairs: list[Pair] = []
    cfg = None
    with tempfile.TemporaryDirectory(prefix="compare_avalanche-") as tmp:
        for seed in seeds:
            for name in strategies:
                cfg = load(config_overrides(benchmark, name, seed, epochs, ewc_lambda, extra or [], device, tmp))
                stream = build_stream_from(cfg)  # memoised: run_continual gets this same object
                ours_R, ours_b, ours_s, init = run_ours(cfg)
                assert stream is build_stream_from(cfg), "the stream memo was evicted; Avalanche would see another stream"
                avl_R, avl_b, avl_s = run_avalanche(name, stream, copy.deepcopy(init), cfg, device, seed, reset_optimizer)
                pair = Pair(name, seed, ours_R, ours_b, avl_R, avl_b, ours_s, avl_s)
                for r in range(1, avalanche_repeats):  # same stream and init, other mini-batch order
                    R, b, s = run_avalanche(name, stream, copy.deepcopy(init), cfg, device, seed + 7919 * r, reset_optimizer)
                    pair.avl_repeats.append({"shuffle_seed": seed + 7919 * r, **Pair._summary(R, b), "seconds": s})
                pairs.append(pair)
                log(f"  {name:7s} seed {seed}: ours ACC {pair.ours['acc']:6.2f} ({ours_s:5.1f} s) | "
                    f"Avalanche ACC {pair.avl['acc']:6.2f} ({avl_s:5.1f} s)"
                    + "".join(f" | Avalanche shuffle {x['shuffle_seed']} ACC {x['acc']:6.2f}" for x in pair.avl_repeats))
    return summarise(pairs, cfg, benchmark, seeds, reset_optimizer)


def _mean(xs):
    return float(np.mean(xs))


def _std(xs):
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else None


def summarise(pairs: list[Pair], cfg, benchmark, seeds, reset_optimizer) -> dict:
    per = {}
    for name in dict.fromkeys(p.strategy for p in pairs):
        ps = [p for p in pairs if p.strategy == name]
        diffs = [p.ours["acc"] - p.avl["acc"] for p in ps]
        entry = {
            "ours_acc": _mean([p.ours["acc"] for p in ps]), "avalanche_acc": _mean([p.avl["acc"] for p in ps]),
            "acc_diff": _mean(diffs), "acc_diff_std": _std(diffs),
            "ours_bwt": _mean([p.ours["bwt"] for p in ps]), "avalanche_bwt": _mean([p.avl["bwt"] for p in ps]),
            "bwt_diff": _mean([p.ours["bwt"] - p.avl["bwt"] for p in ps]),
            "ours_seconds": sum(p.ours_seconds for p in ps), "avalanche_seconds": sum(p.avl_seconds for p in ps),
            "b_max_abs_diff": float(max(np.abs(p.ours_b - p.avl_b).max() for p in ps)) * 100,
            "per_seed": [
                {"seed": p.seed, "ours_acc": p.ours["acc"], "avalanche_acc": p.avl["acc"],
                 "ours_bwt": p.ours["bwt"], "avalanche_bwt": p.avl["bwt"],
                 "ours_fwt": p.ours["fwt"], "avalanche_fwt": p.avl["fwt"],
                 "ours_seconds": p.ours_seconds, "avalanche_seconds": p.avl_seconds,
                 "ours_R": np.round(100 * p.ours_R, 2).tolist(), "avalanche_R": np.round(100 * p.avl_R, 2).tolist(),
                 **({"avalanche_repeats": p.avl_repeats} if p.avl_repeats else {})}
                for p in ps
            ],
        }
        reps = [x["acc"] for p in ps for x in p.avl_repeats]
        if reps:  # shuffle-only noise of Avalanche's ACC around the same stream and init
            spread = [p.avl["acc"] - x["acc"] for p in ps for x in p.avl_repeats]
            entry["avalanche_shuffle_acc_absdiff_mean"] = _mean(np.abs(spread))
        per[name] = entry
    t, s = cfg.train, cfg.strategy
    return {
        "benchmark": benchmark, "scenario": cfg.benchmark.scenario, "n_experiences": cfg.benchmark.n_experiences,
        "model": {"name": cfg.model.name, **({"widths": list(cfg.model.widths)} if "widths" in cfg.model else {})},
        "seeds": list(seeds), "epochs": t.epochs, "batch_size": t.batch_size, "optimizer": t.optimizer, "lr": t.lr,
        "momentum": t.momentum, "avalanche_reset_optimizer": reset_optimizer,
        "units": "accuracy points (x100); BWT averaged over T-1 (GEM paper)",
        "max_acc_diff": max(abs(e["acc_diff"]) for e in per.values()),
        "max_acc_diff_any_seed": max(abs(x["ours_acc"] - x["avalanche_acc"]) for e in per.values() for x in e["per_seed"]),
        "max_b_diff": max(e["b_max_abs_diff"] for e in per.values()),
        "ours_seconds": sum(e["ours_seconds"] for e in per.values()),
        "avalanche_seconds": sum(e["avalanche_seconds"] for e in per.values()),
        "strategies": per,
        **({"ewc_lambda": s.ewc_lambda} if "ewc_lambda" in s else {}),
    }


def format_table(res: dict) -> str:
    n = len(res["seeds"])
    head = ["strategy", "ours ACC", "Avalanche ACC", "diff (points)", "ours BWT", "Avalanche BWT", "ours s", "Avalanche s"]
    rows = []
    for name, e in res["strategies"].items():
        diff = f"{e['acc_diff']:+.2f}" + (f" ± {e['acc_diff_std']:.2f}" if e["acc_diff_std"] is not None else "")
        rows.append([name, f"{e['ours_acc']:.2f}", f"{e['avalanche_acc']:.2f}", diff, f"{e['ours_bwt']:.2f}",
                     f"{e['avalanche_bwt']:.2f}", f"{e['ours_seconds']:.1f}", f"{e['avalanche_seconds']:.1f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [
        f"{res['benchmark']} ({res['scenario']}-incremental, {res['n_experiences']} experiences), "
        f"{res['model']}, {res['epochs']} epoch(s)/experience, batch {res['batch_size']}, "
        f"{res['optimizer']} lr {res['lr']} momentum {res['momentum']}, seeds {res['seeds']}",
        f"ACC/BWT in accuracy points{', mean over seeds (diff: mean ± std over seeds)' if n > 1 else ''}; "
        f"seconds summed over seeds.",
        line(head), "|-" + "-|-".join("-" * w for w in widths) + "-|", *(line(r) for r in rows),
        f"wall seconds: ours {res['ours_seconds']:.1f}, Avalanche {res['avalanche_seconds']:.1f} "
        f"(ratio {res['avalanche_seconds'] / max(res['ours_seconds'], 1e-9):.1f}x)",
        f"max |ACC diff| {res['max_acc_diff']:.2f} points (any single seed: {res['max_acc_diff_any_seed']:.2f}); "
        f"b (untrained) agrees to {res['max_b_diff']:.2g} points "
        f"({'identical init and test data' if res['max_b_diff'] == 0 else 'NOT identical: check the init copy'})",
    ]
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    from neumeta_cl.config import group_choices

    p = argparse.ArgumentParser(
        prog="compare_avalanche.py",
        description="Run neumeta_cl's naive/ewc/replay and Avalanche's Naive/EWC/Replay on the same Avalanche "
                    "benchmark object, the same MLP with identical initial weights and the same hyper-parameters; "
                    "print ACC/BWT of both, their difference and wall seconds, then one JSON line (the last line "
                    "of stdout) with max_acc_diff and per-strategy numbers. Defaults are configs/config.yaml's: "
                    "Split-Fashion-MNIST, 5 experiences, class-incremental, MLP 2x256, 1 epoch, batch 128, "
                    "SGD lr 0.01 momentum 0.9, seed 0.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--benchmark", choices=group_choices("benchmark"), default=None,
                   help=f"a configs/benchmark name (default {DEFAULT_BENCHMARK}; {QUICK_BENCHMARK} with --quick)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES), metavar="NAME",
                   help=f"any of: {', '.join(STRATEGIES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="seeds (each sets the class order, the init and both sides' shuffling); "
                        "2-3 seeds tell a systematic gap from noise")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per experience (default: the config's 1; {QUICK_EPOCHS} with --quick)")
    p.add_argument("--ewc-lambda", type=float, default=None, help="EWC lambda, both sides (default: the config's 1000)")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more config overrides, both sides (e.g. train.lr=0.05 strategy.buffer_size=200 "
                        "model.widths=[512])")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK_BENCHMARK} and {QUICK_EPOCHS} epochs unless given")
    p.add_argument("--avalanche-repeats", type=int, default=1,
                   help="Avalanche runs per (strategy, seed) with other shuffle seeds on the same stream and init: "
                        "a measure of the mini-batch-order noise alone")
    p.add_argument("--avalanche-reset-optimizer", action="store_true",
                   help="reset Avalanche's SGD momentum at every experience (ours always starts a fresh optimizer; "
                        "Avalanche keeps the momentum buffers by default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both sides)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: two threads stall badly when another process holds the other core)")
    args = p.parse_args(argv)
    if args.benchmark is None:
        args.benchmark = QUICK_BENCHMARK if args.quick else DEFAULT_BENCHMARK
    if args.epochs is None and args.quick:
        args.epochs = QUICK_EPOCHS
    return args


def main(argv=None) -> int:
    torch.set_num_threads(1)  # until --threads is read: importing and composing already runs torch ops
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"compare_avalanche: {args.benchmark}, strategies {' '.join(args.strategies)}, seeds "
          f"{' '.join(map(str, args.seeds))}", flush=True)
    res = compare(args.benchmark, args.strategies, args.seeds, args.epochs, args.ewc_lambda, args.extra, args.device,
                  args.avalanche_repeats, args.avalanche_reset_optimizer, log=lambda m: print(m, flush=True))
    print()
    print(format_table(res))
    print(json.dumps(res, allow_nan=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
