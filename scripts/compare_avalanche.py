"""Our strategies next to Avalanche's (naive, ewc, replay, si, mas, agem, er_ace, der, gdumb): same stream, net, init and numbers.

    python scripts/compare_avalanche.py                       # Split-Fashion-MNIST, 5 exps, seed 0
    python scripts/compare_avalanche.py --seeds 0 1 2         # mean differences over 3 seeds
    python scripts/compare_avalanche.py --quick               # split digits: a smoke run in seconds
    python scripts/compare_avalanche.py --strategies replay --set strategy.buffer_size=200

The comparison, what it shares and what not, and its findings: ``neumeta_cl.reference.avalanche``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import torch  # noqa: E402

from neumeta_cl.reference.avalanche import (  # noqa: E402
    DEFAULT_BENCHMARK, QUICK_BENCHMARK, QUICK_EPOCHS, STRATEGIES, compare, format_table, json_line, merge, save,
)


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
        epilog="examples:\n"
               "  compare_avalanche.py                          # the default stream, seed 0 (~1 min)\n"
               "  compare_avalanche.py --seeds 0 1 2            # mean differences over 3 seeds (~2-3 min)\n"
               "  compare_avalanche.py --quick                  # split digits, a smoke run (~30 s)\n"
               "  compare_avalanche.py --strategies replay --avalanche-repeats 3 --set strategy.buffer_size=200\n"
               "JSON: max_acc_diff = max over strategies of |mean over seeds of (ours - Avalanche) ACC|, in points;\n"
               "within_target = max_acc_diff <= 2 and no seed where only one side diverged. The findings of the\n"
               "comparison are in the docstring of neumeta_cl/reference/avalanche.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", choices=group_choices("benchmark"), default=None,
                   help=f"run every strategy on this configs/benchmark (default: each strategy on the stream it is "
                        f"meant for: {DEFAULT_BENCHMARK} class-incremental, SI and MAS task-incremental, A-GEM also "
                        f"permuted_fmnist; {QUICK_BENCHMARK} with --quick)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES), metavar="NAME",
                   help=f"any of: {', '.join(STRATEGIES)} (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                   help="seeds (each sets the class order, the init and both sides' shuffling); "
                        "2-3 seeds tell a systematic gap from noise (default: 0)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per experience (default: the config's 1; {QUICK_EPOCHS} with --quick)")
    p.add_argument("--ewc-lambda", type=float, default=None, metavar="LAMBDA",
                   help="EWC lambda, both sides (default: the config's)")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more overrides of our config, which Avalanche's side reads too (train.*, model.*, "
                        "strategy.*, benchmark.*), e.g. train.lr=0.05 strategy.buffer_size=200 model.widths=[512]")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK_BENCHMARK} and {QUICK_EPOCHS} epochs unless given")
    p.add_argument("--avalanche-repeats", type=int, default=1, metavar="N",
                   help="Avalanche runs per (strategy, seed), the extra ones with other shuffle seeds on the same "
                        "stream and init: measures the mini-batch-order noise alone (default: 1)")
    p.add_argument("--avalanche-reset-optimizer", action="store_true",
                   help="reset Avalanche's SGD momentum at every experience (ours always starts a fresh optimizer; "
                        "Avalanche keeps the momentum buffers by default)")
    p.add_argument("--avalanche-si-as-shipped", action="store_true",
                   help="run Avalanche's SI as shipped: on the CPU it keeps views of the live weights, so its Omega and "
                        "penalty are 0 and it trains as Naive (default: with that fixed)")
    p.add_argument("--save", metavar="PATH", help="also write what --merge needs to PATH (JSON)")
    p.add_argument("--merge", nargs="+", metavar="PATH",
                   help="run nothing: one table and JSON line from comparisons saved with --save (e.g. one process "
                        "per seed: --seeds 0 --save s0.json, --seeds 1 --save s1.json, then --merge s0.json s1.json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda, both sides (default: cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; two threads stall badly when another process holds the "
                        "other core)")
    args = p.parse_args(argv)
    if args.avalanche_repeats < 1 or args.threads < 1:
        p.error("--avalanche-repeats and --threads must be at least 1")
    if args.benchmark is None and args.quick:
        args.benchmark = QUICK_BENCHMARK
    if args.epochs is None and args.quick:
        args.epochs = QUICK_EPOCHS
    return args


def main(argv=None) -> int:
    torch.set_num_threads(1)  # until --threads is read: importing and composing already runs torch ops
    args = parse_args(argv)
    if args.merge:
        res = merge(args.merge)
        print(format_table(res))
        print(json_line(res))
        return 0
    print(f"compare_avalanche: {args.benchmark or 'each strategy on its own stream'}, strategies {' '.join(args.strategies)}, seeds "
          f"{' '.join(map(str, args.seeds))}", flush=True)
    res = compare(args.benchmark, args.strategies, args.seeds, args.epochs, args.ewc_lambda, args.extra, args.device,
                  args.avalanche_repeats, args.avalanche_reset_optimizer, args.threads,
                  log=lambda m: print(m, flush=True), patch_si=not args.avalanche_si_as_shipped)
    if args.save:
        save(res, args.save)
    print()
    print(format_table(res))
    print(json_line(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
