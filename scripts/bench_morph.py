"""How fast are the morph operators, what does their report's accounting cost, and how well do the
preserving ones preserve? One table.

Trains an MLP 784-256-256-10 and the default CNN [32, 64] (BatchNorm) briefly on Fashion-MNIST, each
also as a 5-head task-incremental net, applies every morph operator and prints its MorphReport
(median of ``--repeats`` calls after one warm-up). The benchmark itself lives in
``neumeta_cl/morph/bench.py``, which says what each row does.

Targets (from the issue): every structural operator under 20 ms on the MLP (``max_ms_mlp``;
``replace_block`` trains a distillation and is reported apart); the report's accounting (FLOP
counting and probe forwards, on a run's probe: ``morph.probe_size`` = 64 images, eval mode) under
10 ms on the MLP and 50 ms on the CNN
(``max_accounting_ms_mlp`` / ``max_accounting_ms_cnn``); operators that claim preservation move the
function by less than 1e-5 on the probe (``max_preservation_error``).

The last line on stdout is JSON for tools and CI.

    python scripts/bench_morph.py                  # Fashion-MNIST nets, median of 5
    python scripts/bench_morph.py --quick          # scikit-learn digits (8x8), a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from neumeta_cl.morph import bench


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scikit-learn digits (8x8) instead of Fashion-MNIST: a smoke run")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per operator after one warm-up (median reported)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, the cores, as a run with train.threads=null gets)")
    ap.add_argument("--steps", type=int, default=None, help="replace_block distillation steps (default: the operator's, 200)")
    ap.add_argument("--rb-repeats", type=int, default=3,
                    help="timed calls for replace_block (it trains; default 3, capped by --repeats)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rb_repeats < 1 or (args.threads is not None and args.threads < 1):
        ap.error("--repeats, --rb-repeats and --threads must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dataset = "digits" if args.quick else "fmnist"
    print(f"# bench_morph: dataset={dataset} threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")
    res = bench.run(dataset, repeats=args.repeats, steps=args.steps, rb_repeats=args.rb_repeats, seed=args.seed, log=print)
    print()
    print(bench.table(res.rows))
    print("\n".join(bench.findings(res)))
    print(json.dumps(res.summary, separators=(",", ":")))
    return res.summary


if __name__ == "__main__":
    main(sys.argv[1:])
