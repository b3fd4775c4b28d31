"""The morph report's accounting and Taylor/Fisher pruning of this checkout against another git
revision, interleaved call by call in one process on the same nets (ratios hold on a noisy machine).
``neumeta_cl/morph/bench.py`` (``versus``) says what is compared and checked.

    python scripts/bench_morph_versus.py d2b88c3            # the accounting before its speed-ups
    python scripts/bench_morph_versus.py d2b88c3 --quick    # digits nets, a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from neumeta_cl.morph import bench


def load_old(rev: str, path: str, name: str, folder: Path):
    """Module ``path`` as it was at git revision ``rev``, imported under ``name``."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    file = folder / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="git revision to compare against, e.g. d2b88c3")
    ap.add_argument("--quick", action="store_true", help="scikit-learn digits instead of Fashion-MNIST")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved calls per version and row (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        old_report = load_old(args.rev, "neumeta_cl/morph/report.py", "old_morph_report", Path(tmp))
        old_prune = load_old(args.rev, "neumeta_cl/morph/prune.py", "old_morph_prune", Path(tmp))
    res = bench.versus(old_report, old_prune, "digits" if args.quick else "fmnist", repeats=args.repeats, log=print)
    print(json.dumps(res["summary"], separators=(",", ":")))
    return res["summary"]


if __name__ == "__main__":
    main(sys.argv[1:])
