"""What resumable runs cost: checkpoint time per experience over training time, and checkpoint sizes.

    python scripts/bench_resume.py            # Split-Fashion-MNIST: naive MLP, neumeta CNN, every strategy's size
    python scripts/bench_resume.py --quick    # the same on digits, in about a minute

Target: checkpointing under 5% of training time. The last line is JSON with
`checkpoint_overhead_frac` (the larger of the two settings) and `checkpoint_mb` (per strategy).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)

    from neumeta_cl.studies.checkpoint_cost import checkpoint_cost, table

    with tempfile.TemporaryDirectory() as tmp:
        res = checkpoint_cost(Path(args.out or tmp), quick=args.quick)
    print(table(res))
    line = {"checkpoint_overhead_frac": round(res["checkpoint_overhead_frac"], 5),
            "naive_mlp_frac": round(res["naive_mlp"]["fraction"], 5),
            "neumeta_cnn_frac": round(res["neumeta_cnn"]["fraction"], 5),
            "checkpoint_mb": res["checkpoint_mb"], "target_met": res["checkpoint_overhead_frac"] < 0.05}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
