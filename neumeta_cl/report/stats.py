"""Summary statistics for tables: the conventions are stated here, once.

- ``std`` is the sample standard deviation (ddof=1, Bessel's correction): the seeds of a table are
  a sample of the seeds one could run. With one run it is undefined (NaN), and tables show none.
- ``ci95`` is the half-width of the 95% confidence interval of the mean from Student's t:
  ``t_{0.975, n-1} * std / sqrt(n)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _scipy_stats

DDOF = 1


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values; std is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=DDOF)) if n > 1 else math.nan, n


def plain_std(std: float) -> float:
    """A std for a study's JSON line: 0.0 where it is undefined (one seed), so the line stays plain
    numbers (NaN is not JSON)."""
    return 0.0 if math.isnan(std) else std


def json_pair(mean: float, std: float) -> list[float]:
    """[mean, std] as a study's JSON line writes them: rounded to 4 places, std 0.0 for one seed."""
    return [round(float(mean), 4), round(float(plain_std(std)), 4)]


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean of ``n`` values with sample std ``std``."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return float(_scipy_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def within(value: float, reference: float, ref_std: float, tolerance_std: float, floor: float) -> bool:
    """|value - reference| <= tolerance_std * ref_std, and never stricter than ``floor`` (for std 0 or one seed)."""
    spread = ref_std if math.isfinite(ref_std) else 0.0
    return abs(value - reference) <= max(tolerance_std * spread, floor)
