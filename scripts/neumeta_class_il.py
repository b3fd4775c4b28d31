"""NeuMeta without task labels: runs experiments/neumeta_class_il.yaml and prints its table.

    python scripts/neumeta_class_il.py                  # Split-Fashion-MNIST, 3 seeds, every strategy
    python scripts/neumeta_class_il.py --seeds 0        # one seed
    python scripts/neumeta_class_il.py --quick          # Split-digits, seed 0 (a smoke run)
    python scripts/neumeta_class_il.py --digits         # Split-digits, 3 seeds (experiments/neumeta_class_il_digits.yaml)
    python scripts/neumeta_class_il.py launcher=local launcher.workers=2

ACC of every strategy and, for the NeuMeta variants, ACC of the routed networks at every width of
their width sweep (``neumeta_cl.studies.neumeta_class_il``). A rerun resumes or skips finished runs.
The last line is JSON: acc_classil ({strategy: [mean, std]}), acc_classil_by_width
({strategy: {fraction: [mean, std]}}), acc_classil_by_budget (the same with each width's parameters
split between the task classifier and the task networks; split_by_budget: their widths),
memory_samples and targets.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")

from neumeta_cl.errors import UserError  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, help="override the experiment's seeds")
    p.add_argument("--quick", action="store_true", help="the quick variant: Split-digits, seed 0")
    p.add_argument("--digits", action="store_true", help="the Split-digits experiment (neumeta_class_il_digits)")
    p.add_argument("--out", default="runs")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE for every run; launcher=... settings go to the launcher")
    from neumeta_cl.studies import overrides_first

    args = p.parse_args(overrides_first(argv))

    from neumeta_cl.experiment import load_experiment, run_experiment
    from neumeta_cl.studies import print_study
    from neumeta_cl.studies.neumeta_class_il import missed_targets, render, summarise
    from neumeta_cl.sweep.plan import quick_variant
    from neumeta_cl.sweep.progress import stderr_console

    launcher = [o for o in args.overrides if o.startswith("launcher")]
    extra = [o for o in args.overrides if not o.startswith("launcher")] + ["train.progress_bar=false"]
    try:
        spec = load_experiment("neumeta_class_il_digits" if args.digits else "neumeta_class_il")
        spec = quick_variant(spec) if args.quick else spec
        result = run_experiment(spec, extra, args.out, seeds=args.seeds, launcher=launcher, console=stderr_console())
    except UserError as e:
        raise SystemExit(str(e))
    figs = summarise(result)
    print_study(render(figs, spec.description), figs, missed_targets(figs), result.out_dir)
    return figs


if __name__ == "__main__":
    main()
    sys.exit(0)
