"""Adaptation speed on the current experience: learning-curve area and time to 95% of final.

    LCA_beta = 1/(beta+1) * sum_{k=0..beta} Z_k                 Chaudhry et al. 2019 (A-GEM)

`Z_k` is the current experience's test accuracy after k mini-batches (Z_0: before the first
one). A-GEM reports Z_k averaged over experiences before taking the area; LCA is linear in Z,
so that equals the mean over experiences of `learning_curve_area` (when all use the same beta).

`steps_to_fraction` / `seconds_to_fraction` read an evaluated learning curve (accuracy measured at
some optimizer steps, with the wall-clock seconds elapsed at each) and return the first point
whose accuracy reaches `fraction` (default 0.95) of the experience's final accuracy. The curve is
only known where it was evaluated, so the answer is the first *evaluated* step at or past the
true crossing: evaluate more often for a finer answer. With `final` set to the pre-morph
accuracy and `fraction=1.0`, the same function gives the steps to recover after a morph.
"""

from __future__ import annotations

import numpy as np

from neumeta_cl.metrics._array import as_array

# An accuracy equal to the threshold up to float rounding (0.95 * 0.202 = 0.19190000000000002)
# counts as reaching it; 1e-9 is far below any test-set resolution (1/n_test).
_TOL = 1e-9


def learning_curve_area(z, beta: int = 10) -> float:
    """LCA_beta = 1/(beta+1) * sum_{k=0..beta} Z_k   (Chaudhry et al., "Efficient Lifelong
    Learning with A-GEM", ICLR 2019).

    `z[k]` is the current experience's test accuracy after k mini-batches, z[0] before any.
    Values past z[beta] are ignored. An experience shorter than beta batches gives fewer than
    beta+1 values: then the average runs over the values that exist (beta_eff = len(z)-1), with
    no padding, so such an LCA is only comparable with others of the same beta_eff.
    """
    z = as_array(z, "z")
    if z.ndim != 1 or z.shape[0] == 0:
        raise ValueError(f"z must be a non-empty 1-D learning curve; got shape {z.shape}")
    if isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or beta < 0:
        raise ValueError(f"beta must be an integer >= 0; got {beta!r}")
    beta_eff = min(int(beta), z.shape[0] - 1)
    return float(z[: beta_eff + 1].mean())


def _first_reaching(x, accs, final, fraction, x_name: str) -> int | None:
    """Index of the first point with accs >= fraction * final, or None."""
    x = as_array(x, x_name)
    accs = as_array(accs, "accs")
    if x.ndim != 1 or accs.ndim != 1 or x.shape != accs.shape or x.shape[0] == 0:
        raise ValueError(
            f"{x_name} and accs must be non-empty 1-D sequences of equal length; "
            f"got shapes {x.shape} and {accs.shape}"
        )
    if np.any(np.diff(x) < 0):
        raise ValueError(f"{x_name} must be non-decreasing (a learning curve in time order)")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    final = float(accs[-1]) if final is None else float(final)
    hits = np.flatnonzero(accs >= fraction * final - _TOL)
    return int(hits[0]) if hits.size else None


def steps_to_fraction(steps, accs, final=None, fraction: float = 0.95) -> int | None:
    """First optimizer step at which the evaluated accuracy is >= fraction * final.

    `steps[i]` is the optimizer step at which `accs[i]` was measured (0 = before training, so an
    experience already at 95% of its final accuracy through forward transfer gives 0). `final`
    defaults to the last accuracy of the curve. None if the curve never reaches the threshold.
    This is DESIGN.md's adaptation speed in optimizer steps (fraction=0.95).
    """
    i = _first_reaching(steps, accs, final, fraction, "steps")
    return None if i is None else int(as_array(steps, "steps")[i])


def seconds_to_fraction(seconds, accs, final=None, fraction: float = 0.95) -> float | None:
    """Wall seconds (as recorded alongside the curve) until accuracy first >= fraction * final.

    Same rule as `steps_to_fraction`, read off a parallel list of elapsed wall-clock seconds.
    Only compare seconds measured in the same run / on the same machine.
    """
    i = _first_reaching(seconds, accs, final, fraction, "seconds")
    return None if i is None else float(as_array(seconds, "seconds")[i])
