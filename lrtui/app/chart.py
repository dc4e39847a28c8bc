"""Braille line charts drawn as Rich text: several series on one step axis, optional log scale."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

from lrtui.app.curves import LOG10_2, Columns, Curve, column_index, nice_range

#: Bit of each dot in a braille cell, indexed [row within cell (0-3), column within cell (0-1)].
_BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
#: Every braille character, indexed by its dot bits.
_BRAILLE = np.array([chr(0x2800 + b) for b in range(256)])
#: Width of the y-axis labels to the left of the plot.
GUTTER = 8


@dataclass
class Series:
    """One curve to draw.

    Attributes:
        curve: the points (steps, values) with their min/max pyramid; NaN and infinities are
            marked, not drawn.
        style: a Rich style; named ANSI colours so they degrade without truecolor.
        label: shown in the chart's legend ("" for none).
        mark_non_finite: put a red ``x`` over columns that hold a NaN or infinite value.
        robust_low: on a log scale, the lowest 1% of this series' points do not lower the
            axis (they are drawn on the bottom row): a noisy mini-batch loss would otherwise
            stretch the axis over decades its mean never visits.
        reference: a line drawn against the other series (a threshold): it widens the axis
            only as far as the others' span again, and is not drawn where it leaves the axis
            (the legend says so with an arrow).
    """

    curve: Curve
    style: str
    label: str = ""
    mark_non_finite: bool = False
    robust_low: bool = False
    reference: bool = False


@dataclass
class ChartSpec:
    """What one chart shows: its title, series and scale, on a given step range.

    ``start_at_data``: a quantity that cannot be negative (loss, gradient norm, LR, sharpness):
    the axis starts at the data's lowest value, never padded below it (so never below zero).
    ``markers``: steps drawn as a vertical line in ``MARKER_STYLE`` (the curve's dots in that
    colour, ``MARKER`` where no curve passes), named ``marker_label`` in the legend (the LR
    chart's actions: a drop is the curve's own vertical step, an averaging start the dotted line).
    """

    title: str
    series: list[Series] = field(default_factory=list)
    x_range: tuple[float, float] = (0.0, 1.0)
    log: bool = False
    note: str = ""
    start_at_data: bool = False
    markers: list[float] = field(default_factory=list)
    marker_label: str = ""


#: The character and style of a marker (an action on the LR chart).
MARKER = "┊"
MARKER_STYLE = "bold yellow"


def format_number(value: float) -> str:
    """Short human form of an axis or readout number (at most 7 characters)."""
    if not np.isfinite(value):
        return {True: "inf", False: "-inf"}.get(value > 0, "nan") if not np.isnan(value) else "nan"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e3 <= magnitude < 1e5:
        text = f"{value:,.0f}"
    elif 1e-3 <= magnitude < 1e3:
        text = f"{value:.3g}"
    else:
        text = f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    return text


def _dot_rows(values: np.ndarray, y_low: float, y_high: float, rows: int) -> np.ndarray:
    """Dot row (0 = top) of each value on a plot ``rows`` dots high (NaN: not drawn; so are the
    values of a range too wide for floats, e.g. ±1e308, whose fraction is inf/inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        frac = (values - y_low) / (y_high - y_low)
    return np.clip(np.round((1.0 - frac) * (rows - 1)), 0, rows - 1)


#: Share of a robust_low series' points (in view) that may lie under a log axis.
ROBUST_SHARE = 0.01
#: Most points a robust_low series is sampled at to find that share (every k-th point).
ROBUST_SAMPLE = 20_000
#: Decades a log axis spans at most below its top.
LOG_DECADES = 12.0


def _extent(series: Series, cols: Columns, log: bool, x_range: tuple[float, float]) -> tuple[float, float]:
    """(lowest, highest) value of a series in view, in axis units (decades on a log scale);
    (inf, -inf) when it has none. On a log scale only positive values count."""
    low, high = cols.low, cols.high
    if log:
        with np.errstate(invalid="ignore"):
            low = np.where(low > 0, low, np.where(cols.last > 0, cols.last, np.where(high > 0, high, np.nan)))
            high = np.where(high > 0, high, np.nan)
    if not np.any(np.isfinite(low)):
        return np.inf, -np.inf
    lo, hi = float(np.nanmin(low)), float(np.nanmax(high))
    if log and series.robust_low:
        x, y = series.curve.x, series.curve.y
        i0, i1 = np.searchsorted(x, x_range[0], "left"), np.searchsorted(x, x_range[1], "right")
        view = y[i0:i1:max(1, (i1 - i0) // ROBUST_SAMPLE)]
        view = view[np.isfinite(view) & (view > 0)]
        if view.size:
            lo = max(lo, float(np.quantile(view, ROBUST_SHARE)))
    if log:
        lo, hi = np.log10(lo), np.log10(hi)
    return lo, hi


def _axis_range(spec: ChartSpec, reduced: list[Columns]) -> tuple[float, float, list[int]]:
    """The y-range (axis units) from the data, and the reference series that leave it (-1 below,
    +1 above, 0 inside) for the legend."""
    extents = [_extent(s, cols, spec.log, spec.x_range) for s, cols in zip(spec.series, reduced)]
    data = [e for s, e in zip(spec.series, extents) if not s.reference and e[0] <= e[1]]
    if data:
        lo, hi = min(e[0] for e in data), max(e[1] for e in data)
        # a reference line widens the axis only as far as the data's own span again
        room = max(hi - lo, LOG10_2 if spec.log else abs(hi))
        for s, (r_lo, r_hi) in zip(spec.series, extents):
            if s.reference and r_lo <= r_hi:
                lo, hi = min(lo, max(r_lo, lo - room)), max(hi, min(r_hi, hi + room))
    else:  # only reference lines (a threshold before any sharpness): they are the data
        refs = [e for e in extents if e[0] <= e[1]]
        lo = min((e[0] for e in refs), default=np.inf)
        hi = max((e[1] for e in refs), default=-np.inf)
    if spec.log and np.isfinite(lo):
        lo = max(lo, hi - LOG_DECADES)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return (*nice_range(lo, hi, log=spec.log), [0] * len(extents))
    y_low, y_high = nice_range(lo, hi, log=spec.log)
    if spec.start_at_data:
        # never padded below the data; a flat curve at zero keeps zero as its floor
        y_low = lo if hi > lo else (max(y_low, 0.0) if not spec.log and lo >= 0 else y_low)
    leaves = [(-1 if e[0] < y_low - 1e-9 * abs(y_low) else 1 if e[1] > y_high + 1e-9 * abs(y_high) else 0)
              if s.reference and e[0] <= e[1] else 0 for s, e in zip(spec.series, extents)]
    return y_low, y_high, leaves


def render_chart(spec: ChartSpec, width: int, height: int) -> Text:
    """Draw ``spec`` in ``width`` x ``height`` terminal cells (first line: title and legend).

    Each series is reduced to min/max per dot column (curves.min_max_columns), so a spike among
    10^6 points is still drawn; consecutive columns are joined so the curve reads as a line. A
    cell where a later series is drawn shows only that series' dots (the smoothed loss reads
    through the raw points' spread).
    """
    out = Text(no_wrap=True, overflow="crop")
    plot_w = max(width - GUTTER, 1)
    plot_h = max(height - 1, 1)
    dots_w, dots_h = plot_w * 2, plot_h * 4
    x_low, x_high = spec.x_range

    reduced = [series.curve.columns(x_low, x_high, dots_w) for series in spec.series]
    y_low, y_high, leaves = _axis_range(spec, reduced)
    _title_line(out, spec, width, leaves)
    has_data = any(np.any(np.isfinite(cols.low)) for cols in reduced)

    bits = np.zeros((plot_h, plot_w), dtype=np.int64)
    owner = np.full((plot_h, plot_w), -1, dtype=np.int64)
    marks = np.zeros(plot_w, dtype=bool)
    dot_row_index = np.arange(dots_h)[:, None]
    for i, (series, cols) in enumerate(zip(spec.series, reduced)):
        if series.mark_non_finite:
            marks |= cols.non_finite.reshape(plot_w, 2).any(axis=1)
        low, high, last = cols.low, cols.high, cols.last
        if spec.log:
            # log is monotonic, so the log of a column's extremes is the extremes of the logs;
            # non-positive values sit on the bottom row rather than vanishing.
            with np.errstate(divide="ignore", invalid="ignore"):
                low, high, last = (np.log10(np.maximum(a, 1e-300)) for a in (low, high, last))
        if series.reference:  # not drawn where it leaves the axis
            with np.errstate(invalid="ignore"):
                outside = (low < y_low) | (high > y_high)
            low, high, last = (np.where(outside, np.nan, a) for a in (low, high, last))
        has = np.isfinite(low)
        if not has.any():
            continue
        r_top = _dot_rows(high, y_low, y_high, dots_h)
        r_bottom = _dot_rows(low, y_low, y_high, dots_h)
        # Join each column to the previous column that has data, through its last value.
        idx = np.where(has, np.arange(dots_w), -1)
        prev = np.maximum.accumulate(idx)
        prev_of = np.r_[-1, prev[:-1]]
        r_prev = np.where(prev_of >= 0, _dot_rows(last[np.maximum(prev_of, 0)], y_low, y_high, dots_h), np.nan)
        top = np.where(has, np.fmin(r_top, r_prev), np.nan)
        bottom = np.where(has, np.fmax(r_bottom, r_prev), np.nan)
        on = (dot_row_index >= top[None, :]) & (dot_row_index <= bottom[None, :])
        if not on.any():
            continue
        cell_bits = on.reshape(plot_h, 4, plot_w, 2) * _BRAILLE_BITS[None, :, None, :]
        series_bits = cell_bits.sum(axis=(1, 3))
        drawn = series_bits > 0
        bits[drawn] = series_bits[drawn]  # the later series owns a shared cell, dots and colour
        owner[drawn] = i

    marker_cols = np.zeros(plot_w, dtype=bool)
    if spec.markers:
        at = column_index(np.asarray(spec.markers, dtype=np.float64), x_low, x_high, dots_w)
        marker_cols[at[(at >= 0) & (at < dots_w)] // 2] = True
        if marker_cols.any() and spec.marker_label:
            _legend(out, MARKER + " " + spec.marker_label, MARKER_STYLE, width)
    labels = _y_labels(y_low, y_high, plot_h, spec.log) if has_data else [""] * plot_h
    styles = [s.style for s in spec.series]
    for r in range(plot_h):
        out.append("\n")
        out.append(labels[r].rjust(GUTTER - 1)[: GUTTER - 1] + "┤" if labels[r] else " " * (GUTTER - 1) + "│",
                   style="dim")
        row_chars = _BRAILLE[bits[r]].tolist()
        key = owner[r].copy()
        if marker_cols.any():  # the column in the marker's colour, a dotted line where no curve passes
            key[marker_cols] = -3
            for c in np.flatnonzero(marker_cols & (bits[r] == 0)):
                row_chars[c] = MARKER
        if r == 0 and marks.any():
            key[marks] = -2
            for c in np.flatnonzero(marks):
                row_chars[c] = "x"
        bounds = [0, *(np.flatnonzero(np.diff(key) != 0) + 1).tolist(), plot_w]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            k = int(key[start])
            style = "bold red" if k == -2 else MARKER_STYLE if k == -3 else (styles[k] if k >= 0 else "")
            out.append("".join(row_chars[start:stop]), style=style)
    return out


def _title_line(out: Text, spec: ChartSpec, width: int, leaves: list[int]) -> None:
    out.append(spec.title + (" (log)" if spec.log else ""), style="bold")
    if spec.note:
        out.append(f"  {spec.note}", style="dim")
    for series, leave in zip(spec.series, leaves):
        label = series.label + {1: " ↑", -1: " ↓"}.get(leave, "") if series.label else ""
        if label:
            _legend(out, "━ " + label, series.style, width)


def _legend(out: Text, entry: str, style: str, width: int) -> None:
    """One legend entry on the title line, when it fits."""
    if out.cell_len + len(entry) + 2 <= width:
        out.append("  ")
        out.append(entry, style=style)


def _y_labels(y_low: float, y_high: float, rows: int, log: bool) -> list[str]:
    """Labels for the top, middle (when there is room) and bottom rows."""
    labels = [""] * rows

    def value(frac: float) -> float:
        v = y_low + frac * (y_high - y_low)
        if not log:
            return v
        with np.errstate(over="ignore"):
            return float(np.power(10.0, v))

    # The top row covers the top quarter-cell of dots; label it with the top of the range.
    labels[0] = format_number(value(1.0))
    if rows >= 2:
        labels[-1] = format_number(value(0.0))
    if rows >= 5:
        labels[rows // 2] = format_number(value(1.0 - (rows // 2) / max(rows - 1, 1)))
    return labels


def render_step_axis(x_range: tuple[float, float] | None, width: int) -> Text:
    """One line under the charts with the first, middle and last step of the shared axis (just
    the word before there are steps)."""
    if x_range is None:
        return Text(" " * (GUTTER - 5) + "step", style="dim", no_wrap=True, overflow="crop")
    plot_w = max(width - GUTTER, 1)
    low, high = x_range
    left, mid, right = (f"{int(round(v)):,}" if np.isfinite(v) else "?" for v in (low, low / 2 + high / 2, high))
    line = [" "] * plot_w
    for text, at in ((left, 0), (mid, plot_w // 2 - len(mid) // 2), (right, plot_w - len(right))):
        for k, ch in enumerate(text):
            if 0 <= at + k < plot_w:
                line[at + k] = ch
    return Text(" " * (GUTTER - 5) + "step " + "".join(line), style="dim", no_wrap=True, overflow="crop")


__all__ = ["ChartSpec", "GUTTER", "MARKER", "MARKER_STYLE", "Series", "format_number", "render_chart", "render_step_axis"]
