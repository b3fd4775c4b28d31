"""Input coercion shared by the metric functions: numpy, lists or torch tensors -> float64."""

from __future__ import annotations

import numpy as np


def as_array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU or requiring grad
        x = x.detach().cpu().double().numpy()  # .double(): numpy has no bfloat16
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric array-like; got {type(x).__name__}: {e}") from e
