"""NeuMeta at any width: runs experiments/neumeta_widths.yaml and individually trained baselines.

    python scripts/neumeta_widths.py                    # 3 seeds (about 12 minutes each on 2 cores)
    python scripts/neumeta_widths.py --seeds 0          # one seed
    python scripts/neumeta_widths.py --from runs/neumeta_widths [...]   # re-read finished runs
    python scripts/neumeta_widths.py --quick            # a smoke run on digits (tests use it)
    python scripts/neumeta_widths.py strategy.reg_weight=30 --baselines runs/neumeta_widths
                                                        # a NeuMeta variant against the same baselines

For every seed, task and width, a network trained on that task alone is the upper bound the one
INR's generated networks are compared with; what is measured and how: ``neumeta_cl.studies.neumeta_widths``.
The last line is JSON: acc_full, acc_full_upper, bwt, acc_by_width ({fraction: [ours, individual]}),
bwt_by_width, unseen_width, stored_params, individual_params_total, gen_ms_full, minutes_per_seed,
train_time_ratio (NeuMeta's training seconds over its individual networks', train_time_same_run),
train_time_ratio_paced (the same, each side over its own networks of the teachers' width) and targets.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")

from neumeta_cl.errors import ConfigError  # noqa: E402
from neumeta_cl.studies import print_study  # noqa: E402
from neumeta_cl.studies.neumeta_widths import missed_targets, read_saved, render, run_seeds, summarise  # noqa: E402


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
    from neumeta_cl.studies import overrides_first

    args = p.parse_args(overrides_first(argv))

    if args.from_dirs:
        out = Path(args.from_dirs[0])
        saved = read_saved(args.from_dirs)
    else:
        try:
            saved, out = run_seeds(args.overrides, args.out, seeds=args.seeds, baselines=args.baselines,
                                   quick=args.quick)
        except ConfigError as e:
            raise SystemExit(str(e))
    figs = summarise(saved)
    print_study(render(figs), figs, missed_targets(figs), out)
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
