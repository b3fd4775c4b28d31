"""Where NeuMeta's training time goes, against the individual networks it replaces.

    python scripts/profile_neumeta.py                      # neumeta_widths' settings, 1 thread
    python scripts/profile_neumeta.py strategy.reg_tasks=1 # any override of that experiment
    python scripts/profile_neumeta.py --quick              # on digits, as neumeta_widths.py --quick

What is timed and how the estimate is made: ``neumeta_cl.studies.neumeta_profile``. Only the
ratios count (a busy machine slows every step alike). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")


def main(argv=None) -> dict:
    from neumeta_cl.studies.neumeta_profile import measure, render

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    out = measure(args.overrides, threads=args.threads, repeat=args.repeat, quick=args.quick)
    print(render(out))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
