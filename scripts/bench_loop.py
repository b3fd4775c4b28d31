"""How fast is neumeta_cl's continual loop? The same stream, model and epochs, three ways, one process.

1. a hand-written PyTorch loop over the experience tensors (the floor),
2. neumeta_cl `naive` through the real recipe (Avalanche stream -> Lightning Trainer.fit per experience),
3. Avalanche's `Naive` strategy on Avalanche's own `SplitFMNIST` (torchvision dataset, per-sample
   PIL -> tensor -> normalise transforms: what an Avalanche user runs), same seed and class order;
4. for reference, Avalanche's `Naive` on our tensor-backed Avalanche benchmark object (the same
   experiences with no per-sample transforms): the Avalanche loop without its data-loading cost.

Each does, per experience: `--epochs` of SGD, then one full pass over every test experience (the
row of R); plus one full test pass before training (b). Reported: seconds per experience, peak
RSS while that loop ran, and the ratios. The last line is JSON for tools and CI.

    python scripts/bench_loop.py                 # Split-Fashion-MNIST, 5 experiences, MLP 784-512-10
    python scripts/bench_loop.py --quick         # split digits, a smoke run
    python scripts/bench_loop.py --strategies    # each baseline's time per experience relative to naive
                                                 # (neumeta_cl.studies.strategy_cost)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import threading
import time

os.environ.setdefault("WANDB_SILENT", "true")

import psutil  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def hand_loop(stream, net, epochs, batch_size, lr, momentum, seed) -> list[list[float]]:
    """The floor: plain PyTorch over the materialised tensors."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def row():
        net.eval()
        accs = [(net(e.x).argmax(1) == e.y).float().mean().item() for e in stream.test]
        net.train()
        return accs

    R = [row()]
    for exp in stream.train:
        for _ in range(epochs):
            for idx in torch.randperm(len(exp.y), generator=g).split(batch_size):
                loss = F.cross_entropy(net(exp.x[idx]), exp.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        R.append(row())
    return R


def neumeta_loop(cfg) -> list[list[float]]:
    from neumeta_cl.run import run_continual

    out = run_continual(cfg).outcome
    return [list(out.b), *map(list, out.R)]


def avalanche_split_fmnist(n_experiences: int, seed: int):
    """Avalanche's classic SplitFMNIST, read from the Fashion-MNIST files neumeta_cl already found."""
    from avalanche.benchmarks.classic import SplitFMNIST

    from neumeta_cl.data.datasets import fmnist_root

    return SplitFMNIST(n_experiences=n_experiences, seed=seed, dataset_root=fmnist_root())


def avalanche_loop(benchmark, net, epochs, batch_size, lr, momentum) -> list[list[float]]:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = Naive(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=epochs,
                     eval_mb_size=1024, device="cpu", evaluator=evaluator)
    test_stream = benchmark.test_stream

    def row():
        res = strategy.eval(test_stream)
        return [res[f"Top1_Acc_Exp/eval_phase/test_stream/Task{e.task_label:03d}/Exp{e.current_experience:03d}"]
                for e in test_stream]

    R = [row()]
    for exp in benchmark.train_stream:
        strategy.train(exp)
        R.append(row())
    return R


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="split_fmnist", help="a benchmark config name (configs/benchmark)")
    p.add_argument("--experiences", type=int, default=5)
    p.add_argument("--widths", default="512", help="hidden widths, comma separated (default: 512)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of the two fast loops (best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--skip-avalanche", action="store_true")
    p.add_argument("--quick", action="store_true", help="split digits, for a smoke run")
    p.add_argument("--strategies", nargs="*", default=None, metavar="NAME",
                   help="instead: time per experience of these strategies (default: every baseline) relative to "
                        "naive, on Split-Fashion-MNIST class-incremental, MLP 2x256, each strategy's config defaults")
    args = p.parse_args(argv)
    if args.strategies is not None:
        return strategy_ratios(args)
    if args.quick:
        args.benchmark, args.repeats = "split_digits", 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from neumeta_cl.config import load
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from

    widths = [int(w) for w in args.widths.split(",")]
    base = [f"benchmark={args.benchmark}", f"benchmark.n_experiences={args.experiences}", f"seed={args.seed}",
            f"model.widths=[{','.join(map(str, widths))}]", f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", f"train.momentum={args.momentum}",
            "logger.mode=disabled", "train.progress_bar=false", "output_dir=/tmp/neumeta_cl_bench"]
    cfg = load(base)
    stream = build_stream_from(cfg)  # built (and memoised) before any timing
    torch.manual_seed(args.seed)
    net0 = build_model({"name": "mlp", "widths": widths}, stream.input_shape, stream.n_classes, stream.heads)
    T = stream.n_experiences
    # Same work as the other two loops: no learning-curve probes (they are measured separately below).
    lean = base + ["metrics.lca_beta=0", "metrics.curve_every_n_steps=0"]
    neumeta_loop(load(base[:1] + ["benchmark.n_experiences=2", *base[2:], "run_name=warmup"]))  # first-call costs
    # Configs are composed outside the timed region: the loop is what is compared.
    lean_cfg, probes_cfg = load(lean + ["run_name=lean"]), load(base + ["run_name=probes"])

    loops = {
        "hand_loop": lambda: hand_loop(stream, copy.deepcopy(net0), args.epochs, args.batch_size, args.lr,
                                       args.momentum, args.seed),
        "neumeta_cl": lambda: neumeta_loop(lean_cfg),
        "neumeta_cl_with_probes": lambda: neumeta_loop(probes_cfg),
    }
    timings: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, fn in loops.items():
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                R = fn()
                secs = time.perf_counter() - t0
            best = timings.get(name)
            if best is None or secs < best["seconds"]:
                timings[name] = {"seconds": secs, "peak_rss_mb": mem.peak / 2**20, "final_acc": sum(R[-1]) / T}
    if not args.skip_avalanche:
        benchmarks = {"avalanche_naive_tensor_backed": stream.benchmark}
        if args.benchmark == "split_fmnist":
            benchmarks["avalanche_naive"] = avalanche_split_fmnist(T, args.seed)
        for name, bm in benchmarks.items():
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                R = avalanche_loop(bm, copy.deepcopy(net0), args.epochs, args.batch_size, args.lr, args.momentum)
                secs = time.perf_counter() - t0
            timings[name] = {"seconds": secs, "peak_rss_mb": mem.peak / 2**20, "final_acc": sum(R[-1]) / T}

    print(f"\n{args.benchmark}, {T} experiences, MLP {'-'.join(map(str, [stream.input_shape, *widths, stream.n_classes]))}, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"{'loop':<30}{'s / experience':>16}{'peak RSS MB':>14}{'final ACC':>11}")
    for name, t in timings.items():
        print(f"{name:<30}{t['seconds'] / T:>16.3f}{t['peak_rss_mb']:>14.0f}{t['final_acc']:>11.3f}")
    hand = timings["hand_loop"]["seconds"]
    ours = timings["neumeta_cl"]["seconds"]
    figures = {
        "benchmark": args.benchmark, "experiences": T, "threads": torch.get_num_threads(),
        "seconds_per_experience": {k: round(v["seconds"] / T, 4) for k, v in timings.items()},
        "peak_rss_mb": {k: round(v["peak_rss_mb"], 1) for k, v in timings.items()},
        "ratio_vs_hand_loop": round(ours / hand, 3),
        "ratio_with_probes_vs_hand_loop": round(timings["neumeta_cl_with_probes"]["seconds"] / hand, 3),
    }
    if "avalanche_naive" in timings:
        figures["speedup_vs_avalanche"] = round(timings["avalanche_naive"]["seconds"] / ours, 2)
    if "avalanche_naive_tensor_backed" in timings:
        figures["speedup_vs_avalanche_tensor_backed"] = round(timings["avalanche_naive_tensor_backed"]["seconds"] / ours, 2)
    print(f"\nneumeta_cl / hand loop: {figures['ratio_vs_hand_loop']:.2f}x (target <= 1.25x)"
          + (f";  Avalanche Naive / neumeta_cl: {figures['speedup_vs_avalanche']:.1f}x (target >= 10x)"
             if "speedup_vs_avalanche" in figures else ""))
    print(json.dumps(figures))
    return figures


def strategy_ratios(args) -> dict:
    from neumeta_cl.studies import strategy_cost

    names = args.strategies or list(strategy_cost.BASELINES)
    res = strategy_cost.measure(names, strategy_cost.QUICK if args.quick else strategy_cost.STREAM,
                                repeats=1 if args.quick else args.repeats, threads=args.threads or 1)
    print()
    print(strategy_cost.table(res))
    print(json.dumps({k: v for k, v in res.items() if k != "stream"} | {"stream": " ".join(res["stream"])},
                     default=float))
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
