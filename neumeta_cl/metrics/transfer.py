"""Accuracy-matrix metrics: average accuracy, backward/forward transfer, forgetting.

`R[i, j]` is the test accuracy on experience j after training on experience i (T x T, 0-indexed);
`b[j]` is the accuracy on experience j of the network at initialisation, before any training.
Every function takes numpy arrays, nested lists or torch tensors and returns a Python float.
Accuracies may be fractions or percentages; the metrics inherit the scale. NaN entries propagate.

    ACC = mean_j R[T-1, j]
    BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j])           Lopez-Paz & Ranzato 2017 (GEM)
    FWT = 1/(T-1) * sum_{j>=1}  (R[j-1, j] - b[j])              Lopez-Paz & Ranzato 2017 (GEM)
    F   = mean_{j<T-1} max_{l<T-1} (R[l, j] - R[T-1, j])        Chaudhry et al. 2018 (RWalk)

Conventions. The 1/(T-1) averages are the GEM *paper*'s ("paper", the default). GEM's released
code (facebookresearch/GradientEpisodicMemory, metrics/metrics.py) fills a length-T vector whose
unused entry is 0 (bwt[T-1] = R[T-1,T-1] - R[T-1,T-1], fwt[0] = 0) and takes `.mean()` over all
T, so it reports (T-1)/T times the paper value ("gem_code"). Tables must say which they use.

With a single experience (T == 1) BWT, FWT and F have nothing to average over: they are
undefined and returned as NaN (Avalanche reports 0.0 there; we prefer an honest NaN).

Avalanche (avalanche.evaluation.metrics, v0.6.0), on the same R and b and with the test stream
evaluated before training and after every experience, reports at the end of the stream:
StreamBWT == backward_transfer(R), StreamForwardTransfer == forward_transfer(R, b) (both the
"paper" convention) and StreamForgetting == -backward_transfer(R), which is NOT `forgetting(R)`:
it measures the drop from R[j, j] instead of from max_l R[l, j] (tests/test_metrics.py).
"""

from __future__ import annotations

import math

import numpy as np

from neumeta_cl.metrics._array import as_array

CONVENTIONS = ("paper", "gem_code")


def _check_matrix(R) -> np.ndarray:
    R = as_array(R, "R")
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(
            f"R must be a non-empty square T x T accuracy matrix (R[i, j] = accuracy on "
            f"experience j after training on experience i); got shape {R.shape}"
        )
    return R


def _check_baseline(b, T: int) -> np.ndarray:
    b = as_array(b, "b")
    if b.ndim != 1 or b.shape[0] != T:
        raise ValueError(
            f"b must be a vector of length T={T} (accuracy of the initial network on each "
            f"experience); got shape {b.shape}"
        )
    return b


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown convention {convention!r}; valid choices: {', '.join(CONVENTIONS)}"
        )


def _apply_convention(value: float, T: int, convention: str) -> float:
    return gem_code_convention(value, T) if convention == "gem_code" else value


def gem_code_convention(value: float, T: int) -> float:
    """Convert a 1/(T-1) ("paper") BWT or FWT to the value GEM's released code prints.

    GEM's code averages T per-experience terms, one of which is identically 0, so its number is
    (T-1)/T times the paper's. NaN (T == 1) stays NaN.
    """
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be a positive integer; got {T!r}")
    return float(value) * (T - 1) / T


def average_accuracy(R) -> float:
    """ACC = mean_j R[T-1, j]: mean accuracy over all experiences after training on the last.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017.
    """
    R = _check_matrix(R)
    return float(R[-1].mean())


def backward_transfer(R, convention: str = "paper") -> float:
    """BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j])   (Lopez-Paz & Ranzato 2017, GEM).

    How training on later experiences changed accuracy on earlier ones, measured from right
    after each was learned. Negative = forgetting. The last experience is excluded (its term is
    0 by construction). `convention="gem_code"` returns the all-T average, (T-1)/T of this.
    NaN when T == 1.
    """
    _check_convention(convention)
    R = _check_matrix(R)
    T = R.shape[0]
    if T == 1:
        return math.nan
    bwt = float((R[-1, :-1] - np.diag(R)[:-1]).mean())
    return _apply_convention(bwt, T, convention)


def forward_transfer(R, b, convention: str = "paper") -> float:
    """FWT = 1/(T-1) * sum_{j>=1} (R[j-1, j] - b[j])   (Lopez-Paz & Ranzato 2017, GEM).

    Accuracy on experience j just before training on it, relative to the untrained network: how
    much learning the earlier experiences helped the next one zero-shot. The first experience is
    excluded (nothing was learned before it). `convention="gem_code"` returns the all-T average,
    (T-1)/T of this. NaN when T == 1.
    """
    _check_convention(convention)
    R = _check_matrix(R)
    T = R.shape[0]
    b = _check_baseline(b, T)
    if T == 1:
        return math.nan
    # np.diag(R, k=1)[j-1] == R[j-1, j] for j = 1..T-1
    fwt = float((np.diag(R, k=1) - b[1:]).mean())
    return _apply_convention(fwt, T, convention)


def forgetting(R) -> float:
    """F = mean_{j<T-1} max_{l<T-1} (R[l, j] - R[T-1, j])   (Chaudhry et al. 2018).

    Chaudhry, Dokania, Ajanthan & Torr, "Riemannian Walk for Incremental Learning", ECCV 2018
    (also A-GEM, ICLR 2019): f_j = max_{l in 1..k-1} a_{l,j} - a_{k,j} for j < k, averaged over j.
    The best accuracy ever reached on j before the end, minus the final accuracy on j.

    Which l: every l < T-1, exactly as written, including l < j (accuracy on j *before* it was
    trained, e.g. zero-shot transfer from similar earlier domains). The papers' max runs over all
    earlier rows, not only l >= j, so a peak reached before j was trained counts as knowledge
    that was later lost. l = T-1 is excluded, so F can be negative when the final accuracy
    exceeds every earlier one (positive backward transfer is not clipped to 0).
    The last experience j = T-1 is excluded: it has not had a chance to be forgotten.

    Relation to BWT: since l = j is among the candidates, F >= -BWT, with equality iff every
    column's best pre-final accuracy is R[j, j]. Avalanche's StreamForgetting is -BWT, not F.
    NaN when T == 1.
    """
    R = _check_matrix(R)
    if R.shape[0] == 1:
        return math.nan
    best = R[:-1, :-1].max(axis=0)  # max over l < T-1, for each j < T-1
    return float((best - R[-1, :-1]).mean())


def summarize(R, b=None, convention: str = "paper") -> dict[str, float]:
    """{"acc", "bwt", "fwt", "forgetting"} for one accuracy matrix.

    `convention` applies to bwt and fwt only (ACC and F have no competing convention); record it
    next to the numbers. Without `b`, fwt is NaN: forward transfer needs the initial accuracies.
    """
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R, convention),
        "fwt": math.nan if b is None else forward_transfer(R, b, convention),
        "forgetting": forgetting(R),
    }
