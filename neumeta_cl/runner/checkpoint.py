"""A run's checkpoint: everything needed to continue after the last finished experience.

One file, ``checkpoint.pt``, replaced atomically after every experience (``tracking.atomic``):
a kill at any instant leaves the previous checkpoint or the new one. It holds plain data only and
loads with ``torch.load(weights_only=True)``: nothing is pickled, random states are tensors and
lists.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from neumeta_cl.errors import UserError
from neumeta_cl.tracking.atomic import save_atomic

FORMAT = 1


def python_rng_state(rng=random) -> list:
    """A Python generator's state (the ``random`` module's or a ``random.Random``'s) as plain lists."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_python_rng_state(state: list, rng=random) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


def rng_state() -> dict:
    """The global random generators: torch (CPU and every GPU), numpy and Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": python_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    set_python_rng_state(state["python"])


def save_checkpoint(state: dict, path: Path) -> None:
    save_atomic({"format": FORMAT, **state}, path)


class CheckpointError(UserError):
    """A checkpoint that cannot be read (another format, a damaged file)."""


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"The checkpoint {path} cannot be read ({type(e).__name__}); "
                              "rerun with resume=false to start over in a fresh folder.") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"The checkpoint {path} has format {state.get('format')}, this version reads {FORMAT}; "
                              "rerun with resume=false to start over in a fresh folder.")
    return state
