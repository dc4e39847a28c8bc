"""A robust trend test: the Theil-Sen slope of a few batch means and its distribution-free interval.

The regime test (``regime.py``) fits least squares to ``BATCHES`` batch means of the log loss.
Least squares is the efficient estimate under normal scatter, but one batch that holds a spike
(a loss 10x its level, common in a chaotic equilibrium at a large LR) moves its slope and
shrinks nothing of its interval's trust. The Theil-Sen estimate is the median of the slopes of
all pairs of points; its interval comes from Kendall's S, whose null distribution does not
depend on how the points scatter (Sen 1968; Hollander & Wolfe, *Nonparametric Statistical
Methods*, ch. 9): with N = n(n-1)/2 pairwise slopes sorted, the two-sided 1-2α interval runs from
the M1-th to the (M2+1)-th, M1 = (N - C)/2, M2 = (N + C)/2, C = z_α √(n(n-1)(2n+5)/18).

For n = 10 points, N = 45 slopes; at the 90% level (z = 1.645, as the regime test's t-interval)
C = 18.4, so the interval is the 13th..33rd smallest slope. Up to about a third of the points
can be outliers before the estimate breaks down. O(n²) = 45 slopes per test, on the batch
means the regime test has already formed: no pass over the losses.
"""

from __future__ import annotations

import math

import numpy as np

#: One-sided 95% normal quantile (the interval is two-sided 90%, as ``regime.T_QUANTILE``'s).
Z = 1.6449


def sen_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(slope, lo, hi): the Theil-Sen slope of y on x and its 90% interval from Kendall's S.

    ``x`` strictly increasing (pairs with equal x are left out). With fewer than 3 points the
    interval is unbounded.
    """
    n = len(x)
    i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    keep = dx > 0
    slopes = np.sort((y[j] - y[i])[keep] / dx[keep])
    m = len(slopes)
    if n < 3 or m == 0:
        return (float(np.median(slopes)) if m else 0.0), -math.inf, math.inf
    c = Z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    lo_rank = int(math.floor((m - c) / 2.0))  # the M1-th smallest, 1-based
    hi_rank = int(math.ceil((m + c) / 2.0)) + 1  # the (M2 + 1)-th
    lo = float(slopes[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    hi = float(slopes[hi_rank - 1]) if hi_rank <= m else math.inf
    return float(np.median(slopes)), lo, hi


__all__ = ["sen_interval"]
