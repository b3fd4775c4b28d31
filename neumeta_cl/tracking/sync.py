"""``neumeta-cl sync DIR...``: upload the offline W&B runs of sweeps or runs with W&B's own ``wandb sync``.

A resumed run wrote one offline folder per attempt under the same run id; ``wandb sync`` uploads
them in order into that one run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from neumeta_cl.errors import UserError


def offline_runs(paths: list[str | Path]) -> list[Path]:
    """Every ``wandb/offline-run-*`` folder under ``paths``, oldest first."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p} does not exist; give sweep or run folders.")
        found += [d for d in p.rglob("offline-run-*") if d.is_dir() and d.parent.name == "wandb"]
    return sorted(set(found), key=lambda d: d.name)


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="replace")


def sync(paths: list[str], dry_run: bool = False) -> int:
    runs = offline_runs(paths)
    if not runs:
        raise UserError(f"No offline W&B runs under {', '.join(paths)}; runs with logger.mode=offline write them.")
    for d in runs:
        print(d)
    if dry_run:
        print(f"{len(runs)} offline run folder(s) would be uploaded.")
        return 0
    if not has_credentials():
        raise UserError("W&B has no API key here; run `wandb login` (or set WANDB_API_KEY), then sync again.")
    wandb = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    done = subprocess.run([wandb, "sync", *map(str, runs)])
    if done.returncode:
        raise UserError(f"`wandb sync` failed (exit code {done.returncode}); its output above says why.")
    print(f"uploaded {len(runs)} offline run folder(s).")
    return 0
