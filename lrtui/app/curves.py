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
    # x == x_max belongs to the last column, not one past it; NaN (no x) falls outside.
    scaled[x == x_max] = width - 1
    np.clip(scaled, -1, width, out=scaled)
    scaled[np.isnan(scaled)] = -1
    return scaled.astype(np.int64)


#: The arrays of one level of a curve's pyramid, one entry per block of points.
Level = dict[str, np.ndarray]


def _level0(x: np.ndarray, y: np.ndarray) -> Level:
    """Every point as its own block."""
    finite = np.isfinite(y)
    values = np.where(finite, y, np.nan)
    return {"i": np.arange(x.size), "x": x, "x_end": x, "low": values, "low_x": x, "high": values,
            "high_x": x, "last": values, "last_x": x, "nf_x": np.where(finite, np.nan, x),
            "count": np.ones(x.size, np.int64)}


def _coarsen(level: Level, fan: int) -> Level:
    """Blocks of ``fan`` blocks: extremes keep the x where they occur, so nothing moves."""
    n = (level["x"].size // fan) * fan  # a trailing partial block is read from finer levels
    rows = np.arange(n // fan)

    def grid(name: str) -> np.ndarray:
        return level[name][:n].reshape(-1, fan)

    low, high, last, nf_x = grid("low"), grid("high"), grid("last"), grid("nf_x")
    at_low = np.argmin(np.where(np.isnan(low), np.inf, low), axis=1)
    at_high = np.argmax(np.where(np.isnan(high), -np.inf, high), axis=1)
    valid = ~np.isnan(last)
    at_last = fan - 1 - np.argmax(valid[:, ::-1], axis=1)
    at_nf = np.argmax(~np.isnan(nf_x), axis=1)
    return {
        "i": grid("i")[:, 0],
        "x": grid("x")[:, 0],
        "x_end": grid("x_end")[:, -1],
        "low": low[rows, at_low], "low_x": grid("low_x")[rows, at_low],
        "high": high[rows, at_high], "high_x": grid("high_x")[rows, at_high],
        "last": last[rows, at_last], "last_x": grid("last_x")[rows, at_last],
        "nf_x": nf_x[rows, at_nf],
        "count": grid("count").sum(axis=1),
    }


def _groups(col: np.ndarray, keep: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows kept and inside [0, width): (row indices, group starts, column of each group)."""
    rows = np.flatnonzero(keep & (col >= 0) & (col < width))
    c = col[rows]
    if c.size > 1 and np.any(np.diff(c) < 0):
        rows = rows[np.argsort(c, kind="stable")]
        c = col[rows]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if c.size else np.zeros(0, np.int64)
    return rows, starts, c[starts] if c.size else c


def _aggregate(level: Level, x_min: float, x_max: float, width: int) -> Columns:
    """Combine blocks (or points) into ``width`` columns over [x_min, x_max]."""
    out_low = np.full(width, np.nan)
    out_high = np.full(width, np.nan)
    out_last = np.full(width, np.nan)
    out_nf = np.zeros(width, dtype=bool)
    if width <= 0 or level["x"].size == 0:
        return Columns(out_low, out_high, out_last, out_nf, np.zeros(max(width, 0), np.int64))
    col = column_index(level["x"], x_min, x_max, width)
    inside = (col >= 0) & (col < width)
    out_count = np.bincount(col[inside], weights=level["count"][inside], minlength=width).astype(np.int64)
    for name, out, reduce in (("low", out_low, np.minimum), ("high", out_high, np.maximum)):
        values = level[name]
        rows, starts, cols = _groups(column_index(level[name + "_x"], x_min, x_max, width),
                                     ~np.isnan(values), width)
        if rows.size:
            out[cols] = reduce.reduceat(values[rows], starts)
    rows, starts, cols = _groups(column_index(level["last_x"], x_min, x_max, width),
                                 ~np.isnan(level["last"]), width)
    if rows.size:
        ends = np.r_[starts[1:], rows.size] - 1
        out_last[cols] = level["last"][rows[ends]]
    nf_col = column_index(level["nf_x"], x_min, x_max, width)
    marked = nf_col[(nf_col >= 0) & (nf_col < width) & ~np.isnan(level["nf_x"])]
    out_nf[marked] = True
    return Columns(out_low, out_high, out_last, out_nf, out_count)


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size > 1 and np.any(np.diff(x) < 0):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    return x, y


def min_max_columns(x: np.ndarray, y: np.ndarray, x_min: float, x_max: float, width: int) -> Columns:
    """Reduce the points (x, y) to ``width`` columns keeping each column's extremes.

    Unlike taking every k-th point, this keeps every spike: a single outlier among 10^6
    points still sets its column's ``high``. Points outside [x_min, x_max] are left out.
    x need not be sorted; ``last`` is the value at the largest x of the column.
    """
    return _aggregate(_level0(*_sorted(x, y)), x_min, x_max, width)


class Curve:
    """A curve with a min/max pyramid, so any step range reduces to columns in time ~ width.

    Level k holds blocks of ``fan**k`` consecutive points: their first and last x, their min
    and max with the x where each occurs, their last finite value and its x, the x of their
    first non-finite value, and their count. A range is reduced from the coarsest level that
    still gives every column at least two blocks; a block that straddles a column boundary is
    split into finer blocks, and the partial blocks at both ends come from the points
    themselves. The result equals a full scan (min_max_columns) exactly, and nothing beyond
    the range (say, after a replay position) leaks in.

    Args:
        x: steps (sorted here if they are not).
        y: values; NaN and infinities are kept as markers.
        fan: points per block from one level to the next.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, fan: int = 8) -> None:
        self.x, self.y = _sorted(x, y)
        self.fan = fan
        level = _level0(self.x, self.y)
        self.levels = [level]
        while level["x"].size >= fan * 64:
            level = _coarsen(level, fan)
            self.levels.append(level)

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
        fine = self.levels[0]
        if k == 0:
            level = {name: a[i0:i1] for name, a in fine.items()}
        else:
            block = self.fan**k
            j0 = -(-i0 // block)  # first block wholly inside
            j1 = min(i1 // block, self.levels[k]["x"].size)  # one past the last one
            parts = [{name: a[i0:j0 * block] for name, a in fine.items()},
                     {name: a[j1 * block:i1] for name, a in fine.items()}]
            # A block that straddles a column boundary could hide one column's extreme behind
            # the other's: split it into its sub-blocks, down to points if need be. At most one
            # block per boundary straddles, so this costs ~ width * fan per level.
            idx = np.arange(j0, j1)
            for lev in range(k, 0, -1):
                blocks = self.levels[lev]
                straddle = (column_index(blocks["x"][idx], x_min, x_max, width)
                            != column_index(blocks["x_end"][idx], x_min, x_max, width))
                parts.append({name: a[idx[~straddle]] for name, a in blocks.items()})
                idx = ((idx[straddle] * self.fan)[:, None] + np.arange(self.fan)).ravel()
            parts.append({name: a[idx] for name, a in fine.items()})
            level = {name: np.concatenate([p[name] for p in parts]) for name in fine}
            order = np.argsort(level["i"])  # back in point order (equal steps keep theirs)
            level = {name: a[order] for name, a in level.items()}
        return _aggregate(level, x_min, x_max, width)


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
    cnum = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(1, y.size + 1)
    start = np.maximum(idx - window, 0)
    n = cnum[idx] - cnum[start]
    # Values near 1.8e308 overflow the running sum: those means come out NaN (not drawn).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        csum = np.concatenate([[0.0], np.cumsum(values)])
        total = csum[idx] - csum[start]
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


#: log10(2): the room a log-scale range leaves around a flat curve.
LOG10_2 = 0.30102999566398120


def nice_range(low: float, high: float, log: bool) -> tuple[float, float]:
    """A y-range that holds [low, high] with a little room, never empty.

    With ``log`` the bounds are decades (log10 of the values), so values up to 1.8e308 never
    overflow: a flat curve gets a factor of 2 either side.
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return (0.0, 1.0) if not log else (-3.0, 0.0)
    if log:
        high = max(high, low)
        if high - low < LOG10_2 * 1e-4:
            return low - LOG10_2, high + LOG10_2
        return low, high
    if high - low <= abs(high) * 1e-9 + 1e-300:
        pad = abs(high) * 0.05 or 0.5
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


__all__ = ["LOG10_2", "Columns", "Curve", "column_index", "min_max_columns", "moving_average", "nice_range"]
