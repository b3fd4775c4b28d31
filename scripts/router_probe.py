"""Train class-incremental NeuMeta's task classifier alone and print which task it infers, per width.

    python scripts/router_probe.py                                   # neumeta_class_il (Split-Fashion-MNIST), seed 0
    python scripts/router_probe.py --experiment neumeta_class_il_digits --seeds 0 1 2
    python scripts/router_probe.py strategy.router_epochs=3          # a variant: any override

``neumeta_cl.studies.router_probe``: the classifier trains as inside a ``routing=router`` run, without
the generator, so a router variant costs minutes. For every width: the mean over experiences of the
fraction of test inputs sent to the right task, with and without the class offsets. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="neumeta_class_il")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("overrides", nargs="*", help="KEY=VALUE on top of the experiment's neumeta_router row")
    from neumeta_cl.studies import overrides_first

    args = p.parse_args(overrides_first(argv))

    import torch

    from neumeta_cl.errors import UserError
    from neumeta_cl.studies.router_probe import probe

    torch.set_num_threads(1)
    try:
        results = [probe(args.experiment, seed, args.overrides) for seed in args.seeds]
    except UserError as e:
        raise SystemExit(str(e))
    for r in results:
        for fraction, row in r["task_accuracy"].items():
            print(f"seed {r['seed']}  width {float(fraction):>5.0%}  right task {row['with_offsets']:.3f} "
                  f"(without offsets {row['without_offsets']:.3f})  per experience {row['per_experience']}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
