"""What a result needs to be reproduced: package versions and the git commit."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("neumeta_cl", "torch", "torchvision", "pytorch-lightning", "avalanche-lib", "wandb", "torchmetrics",
            "hydra-core", "numpy", "scikit-learn")


@functools.cache  # versions cannot change within a process
def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path | None = None) -> dict[str, str | bool | None]:
    """The commit of the checkout neumeta_cl runs from, and whether it had uncommitted changes."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}
    if sha.returncode != 0:
        return {"sha": None, "dirty": None}
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def runtime(device) -> dict:
    """Where the numbers came from: torch's thread count, the device, the host and Python."""
    import platform

    import torch

    info = {"threads": torch.get_num_threads(), "device": str(device), "python": platform.python_version(),
            "host": platform.node()}
    if getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
