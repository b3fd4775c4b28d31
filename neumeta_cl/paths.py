"""Where the configs and the named experiments live (a leaf module: anything may import it)."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """``$NEUMETA_CL_CONFIG_DIR`` or the repository's ``configs/``."""
    env = os.environ.get("NEUMETA_CL_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


def experiments_dir() -> Path:
    """``$NEUMETA_CL_EXPERIMENTS_DIR`` or the repository's ``experiments/``."""
    env = os.environ.get("NEUMETA_CL_EXPERIMENTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "experiments"
