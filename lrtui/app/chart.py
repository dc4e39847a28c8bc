"""Braille line charts drawn as Rich text: several series on one step axis, optional log scale."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

from lrtui.app.curves import Columns, Curve, nice_range

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
    """

    curve: Curve
    style: str
    label: str = ""
    mark_non_finite: bool = False


@dataclass
class ChartSpec:
    """What one chart shows: its title, series and scale, on a given step range."""

    title: str
    series: list[Series] = field(default_factory=list)
    x_range: tuple[float, float] = (0.0, 1.0)
    log: bool = False
    note: str = ""


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


def render_chart(spec: ChartSpec, width: int, height: int) -> Text:
    """Draw ``spec`` in ``width`` x ``height`` terminal cells (first line: title and legend).

    Each series is reduced to min/max per dot column (curves.min_max_columns), so a spike among
    10^6 points is still drawn; consecutive columns are joined so the curve reads as a line.
    """
    out = Text(no_wrap=True, overflow="crop")
    plot_w = max(width - GUTTER, 1)
    plot_h = max(height - 1, 1)
    _title_line(out, spec, width)
    dots_w, dots_h = plot_w * 2, plot_h * 4
    x_low, x_high = spec.x_range

    reduced = []
    y_min, y_max = np.inf, -np.inf
    for series in spec.series:
        cols = series.curve.columns(x_low, x_high, dots_w)
        if spec.log:
            # log is monotonic, so the log of a column's extremes is the extremes of the logs;
            # non-positive values sit at the floor rather than vanishing.
            with np.errstate(divide="ignore", invalid="ignore"):
                low, high, last = (np.log10(np.maximum(a, 1e-300)) for a in (cols.low, cols.high, cols.last))
                cols = Columns(low, high, last, cols.non_finite, cols.count)
        reduced.append(cols)
        if np.any(np.isfinite(cols.low)):
            y_min = min(y_min, float(np.nanmin(cols.low)))
            y_max = max(y_max, float(np.nanmax(cols.high)))
    if spec.log and np.isfinite(y_min):
        y_min = max(y_min, y_max - 12)  # a floor of 1e-300 would flatten everything else
    y_low, y_high = nice_range(y_min, y_max, log=spec.log)

    bits = np.zeros((plot_h, plot_w), dtype=np.int64)
    owner = np.full((plot_h, plot_w), -1, dtype=np.int64)
    marks = np.zeros(plot_w, dtype=bool)
    dot_row_index = np.arange(dots_h)[:, None]
    for i, cols in enumerate(reduced):
        has = np.isfinite(cols.low)
        if spec.series[i].mark_non_finite:
            marks |= cols.non_finite.reshape(plot_w, 2).any(axis=1)
        if not has.any():
            continue
        r_top = _dot_rows(cols.high, y_low, y_high, dots_h)
        r_bottom = _dot_rows(cols.low, y_low, y_high, dots_h)
        # Join each column to the previous column that has data, through its last value.
        idx = np.where(has, np.arange(dots_w), -1)
        prev = np.maximum.accumulate(idx)
        prev_of = np.r_[-1, prev[:-1]]
        r_prev = np.where(prev_of >= 0, _dot_rows(cols.last[np.maximum(prev_of, 0)], y_low, y_high, dots_h),
                          np.nan)
        top = np.where(has, np.fmin(r_top, r_prev), np.nan)
        bottom = np.where(has, np.fmax(r_bottom, r_prev), np.nan)
        on = (dot_row_index >= top[None, :]) & (dot_row_index <= bottom[None, :])
        if not on.any():
            continue
        cell_bits = on.reshape(plot_h, 4, plot_w, 2) * _BRAILLE_BITS[None, :, None, :]
        series_bits = cell_bits.sum(axis=(1, 3))
        bits |= series_bits
        owner[series_bits > 0] = i  # the later series owns a shared cell's colour

    labels = _y_labels(y_low, y_high, plot_h, spec.log)
    styles = [s.style for s in spec.series]
    for r in range(plot_h):
        out.append("\n")
        out.append(labels[r].rjust(GUTTER - 1)[: GUTTER - 1] + "┤" if labels[r] else " " * (GUTTER - 1) + "│",
                   style="dim")
        row_chars = _BRAILLE[bits[r]].tolist()
        key = owner[r].copy()
        if r == 0 and marks.any():
            key[marks] = -2
            for c in np.flatnonzero(marks):
                row_chars[c] = "x"
        bounds = [0, *(np.flatnonzero(np.diff(key) != 0) + 1).tolist(), plot_w]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            k = int(key[start])
            style = "bold red" if k == -2 else (styles[k] if k >= 0 else "")
            out.append("".join(row_chars[start:stop]), style=style)
    return out


def _title_line(out: Text, spec: ChartSpec, width: int) -> None:
    out.append(spec.title + (" (log)" if spec.log else ""), style="bold")
    if spec.note:
        out.append(f"  {spec.note}", style="dim")
    for series in spec.series:
        if series.label and out.cell_len + len(series.label) + 3 <= width:
            out.append("  ")
            out.append("━ " + series.label, style=series.style)


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


def render_step_axis(x_range: tuple[float, float], width: int) -> Text:
    """One line under the charts with the first, middle and last step of the shared axis."""
    plot_w = max(width - GUTTER, 1)
    low, high = x_range
    left, mid, right = (f"{int(round(v)):,}" if np.isfinite(v) else "?" for v in (low, low / 2 + high / 2, high))
    line = [" "] * plot_w
    for text, at in ((left, 0), (mid, plot_w // 2 - len(mid) // 2), (right, plot_w - len(right))):
        for k, ch in enumerate(text):
            if 0 <= at + k < plot_w:
                line[at + k] = ch
    return Text(" " * (GUTTER - 5) + "step " + "".join(line), style="dim", no_wrap=True, overflow="crop")


__all__ = ["ChartSpec", "GUTTER", "Series", "format_number", "render_chart", "render_step_axis"]
