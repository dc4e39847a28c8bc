"""Honest reduction of long curves for drawing: min/max per column (spikes stay) and a stated smoothing window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Columns:
    """A curve reduced to a fixed number of columns over an x-range.

    Attributes:
        low: smallest finite y in each column (NaN where the column holds no finite point).
        high: largest finite y in each column (NaN likewise).
        last: the y of the last finite point in each column (NaN likewise); a line is drawn
            through these so the curve reads left to right.
        non_finite: True where the column holds a NaN or infinite y (a divergence marker).
        count: points that fell in each column.
    """

    low: np.ndarray
    high: np.ndarray
    last: np.ndarray
    non_finite: np.ndarray
    count: np.ndarray


def column_index(x: np.ndarray, x_min: float, x_max: float, width: int) -> np.ndarray:
    """Column of each x on ``width`` columns spanning [x_min, x_max] (-1 or ``width`` when outside)."""
    x = np.asarray(x, dtype=np.float64)
    span = x_max - x_min
    if not span > 0:
        return np.where(x == x_min, 0, np.where(x < x_min, -1, width)).astype(np.int64)
    scaled = np.floor((x - x_min) * (width / span))
    # x == x_max belongs to the last column, not one past it.
    scaled[x == x_max] = width - 1
    return np.nan_to_num(scaled, nan=-1.0, posinf=width, neginf=-1).astype(np.int64)


def _last_valid(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each group [start, end] of ``values``, its last non-NaN value (NaN when none)."""
    valid = ~np.isnan(values)
    at = np.maximum.accumulate(np.where(valid, np.arange(values.size), -1))
    pick = at[ends]
    return np.where(pick >= starts, values[np.maximum(pick, 0)], np.nan)


def _aggregate(col: np.ndarray, low: np.ndarray, high: np.ndarray, last: np.ndarray,
               non_finite: np.ndarray, count: np.ndarray, width: int) -> Columns:
    """Combine pieces (each a point or a block of points) into ``width`` columns.

    ``col`` must be non-decreasing; pieces outside [0, width) are dropped.
    """
    out_low = np.full(width, np.nan)
    out_high = np.full(width, np.nan)
    out_last = np.full(width, np.nan)
    out_nf = np.zeros(width, dtype=bool)
    out_count = np.zeros(width, dtype=np.int64)
    inside = (col >= 0) & (col < width)
    if not inside.all():
        col, low, high, last = col[inside], low[inside], high[inside], last[inside]
        non_finite, count = non_finite[inside], count[inside]
    if col.size == 0:
        return Columns(out_low, out_high, out_last, out_nf, out_count)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    ends = np.r_[starts[1:], col.size] - 1
    cols = col[starts]
    with np.errstate(invalid="ignore"):
        out_low[cols] = np.fmin.reduceat(low, starts)  # fmin/fmax skip NaN
        out_high[cols] = np.fmax.reduceat(high, starts)
    out_last[cols] = _last_valid(last, starts, ends)
    out_nf[cols] = np.logical_or.reduceat(non_finite, starts)
    out_count[cols] = np.add.reduceat(count, starts)
    return Columns(out_low, out_high, out_last, out_nf, out_count)


def _points(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(y)
    return np.where(finite, y, np.nan), ~finite


def min_max_columns(x: np.ndarray, y: np.ndarray, x_min: float, x_max: float, width: int) -> Columns:
    """Reduce the points (x, y) to ``width`` columns keeping each column's extremes.

    Unlike taking every k-th point, this keeps every spike: a single outlier among 10^6
    points still sets its column's ``high``. Points outside [x_min, x_max] are left out.
    x need not be sorted (points are grouped by column, keeping their order within one).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if width <= 0:
        width = 0
    col = column_index(x, x_min, x_max, width)
    if col.size > 1 and np.any(np.diff(col) < 0):
        order = np.argsort(col, kind="stable")
        col, y = col[order], y[order]
    values, non_finite = _points(y)
    return _aggregate(col, values, values, values, non_finite, np.ones(col.size, np.int64), width)


class Curve:
    """A curve with a min/max pyramid, so any step range reduces to columns in time ~ width.

    Level k holds blocks of ``fan**k`` consecutive points (their first x, min, max, last finite
    value, whether any was non-finite). A range is reduced from the coarsest level that still
    gives every column at least two blocks, with the partial blocks at both ends taken from the
    points themselves, so nothing beyond the range (say, after a replay position) leaks in.

    Args:
        x: steps (sorted here if they are not).
        y: values; NaN and infinities are kept as markers.
        fan: points per block from one level to the next.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, fan: int = 8) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.size > 1 and np.any(np.diff(x) < 0):
            order = np.argsort(x, kind="stable")
            x, y = x[order], y[order]
        self.x = x
        self.y = y
        self.fan = fan
        values, non_finite = _points(y)
        level = (x, values, values, values, non_finite, np.ones(x.size, np.int64))
        self.levels = [level]
        while level[0].size >= fan * 64:
            level = self._coarsen(level, fan)
            self.levels.append(level)

    @staticmethod
    def _coarsen(level: tuple[np.ndarray, ...], fan: int) -> tuple[np.ndarray, ...]:
        x, low, high, last, nf, count = level
        n = (x.size // fan) * fan  # a trailing partial block is read from finer levels
        with np.errstate(invalid="ignore"):
            lo = np.fmin.reduce(low[:n].reshape(-1, fan), axis=1)
            hi = np.fmax.reduce(high[:n].reshape(-1, fan), axis=1)
        starts = np.arange(0, n, fan)
        la = _last_valid(last[:n], starts, starts + fan - 1)
        return (x[:n:fan], lo, hi, la, nf[:n].reshape(-1, fan).any(axis=1),
                count[:n].reshape(-1, fan).sum(axis=1))

    def __len__(self) -> int:
        return int(self.x.size)

    def columns(self, x_min: float, x_max: float, width: int) -> Columns:
        """The points with x in [x_min, x_max] reduced to ``width`` columns (see min_max_columns)."""
        i0 = int(np.searchsorted(self.x, x_min, side="left"))
        i1 = int(np.searchsorted(self.x, x_max, side="right"))
        n = i1 - i0
        k = 0
        while k + 1 < len(self.levels) and n // (self.fan ** (k + 1)) >= 2 * max(width, 1):
            k += 1
        if k == 0:
            pieces = [tuple(a[i0:i1] for a in self.levels[0])]
        else:
            block = self.fan**k
            j0 = -(-i0 // block)          # first block wholly inside
            j1 = i1 // block              # one past the last block wholly inside
            j1 = min(j1, self.levels[k][0].size)
            pieces = [tuple(a[i0:j0 * block] for a in self.levels[0]),
                      tuple(a[j0:j1] for a in self.levels[k]),
                      tuple(a[j1 * block:i1] for a in self.levels[0])]
        x, low, high, last, nf, count = (np.concatenate(parts) for parts in zip(*pieces))
        return _aggregate(column_index(x, x_min, x_max, width), low, high, last, nf, count, width)


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the last ``window`` finite values at each point (NaN before the first).

    Non-finite values are left out of the mean rather than poisoning every later point, so a
    smoothed curve after a NaN still shows what the finite points did; the raw curve shows the NaN.
    """
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or y.size == 0:
        return y.copy()
    finite = np.isfinite(y)
    values = np.where(finite, y, 0.0)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    cnum = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(1, y.size + 1)
    start = np.maximum(idx - window, 0)
    total = csum[idx] - csum[start]
    n = cnum[idx] - cnum[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def nice_range(low: float, high: float, log: bool) -> tuple[float, float]:
    """A y-range that holds [low, high] with a little room, never empty (log: positive)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return (0.0, 1.0) if not log else (1e-3, 1.0)
    if log:
        low = max(low, 1e-300)
        high = max(high, low)
        if high <= low * 1.0001:
            return low / 2.0, high * 2.0
        return low, high
    if high - low <= abs(high) * 1e-9 + 1e-300:
        pad = abs(high) * 0.05 or 0.5
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


__all__ = ["Columns", "Curve", "column_index", "min_max_columns", "moving_average", "nice_range"]
