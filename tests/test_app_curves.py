"""Unit tests of the app's curve reduction (lrtui.app.curves) and braille charts (lrtui.app.chart)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrtui.app.chart import ChartSpec, Series, format_number, render_chart, render_step_axis
from lrtui.app.curves import Curve, column_index, min_max_columns, moving_average, nice_range


def test_a_single_spike_among_a_million_points_keeps_its_column() -> None:
    x = np.arange(1_000_000, dtype=np.float64)
    y = np.full(x.size, 0.5)
    y[654_321] = 40.0
    cols = min_max_columns(x, y, 0, 999_999, 100)
    assert np.nanmax(cols.high) == 40.0
    assert int(np.nanargmax(cols.high)) == 65
    assert cols.count.sum() == x.size
    # every-k-th-point decimation (what this replaces) would have lost it
    assert y[::10_000].max() == 0.5


def test_non_finite_values_are_marked_not_drawn() -> None:
    x = np.arange(10, dtype=np.float64)
    y = np.array([1, 2, np.nan, 4, np.inf, 6, 7, 8, -np.inf, 10], dtype=np.float64)
    cols = min_max_columns(x, y, 0, 9, 5)
    assert cols.non_finite.tolist() == [False, True, True, False, True]
    # columns 1.8 steps wide: x 0-1, 2-3, 4-5, 6-7, 8-9
    assert cols.low.tolist() == [1, 4, 6, 7, 10]
    assert cols.high.tolist() == [2, 4, 6, 8, 10]
    assert cols.last.tolist() == [2, 4, 6, 8, 10]


def test_unsorted_steps_and_points_outside_the_range() -> None:
    x = np.array([5, 1, 3, 9, 12, -1], dtype=np.float64)
    y = np.array([50, 10, 30, 90, 120, -10], dtype=np.float64)
    cols = min_max_columns(x, y, 0, 10, 2)
    assert cols.low.tolist() == [10, 50]
    assert cols.high.tolist() == [30, 90]
    assert cols.count.tolist() == [2, 2]
    assert column_index(np.array([0.0, 10.0, 10.5, np.nan]), 0, 10, 2).tolist() == [0, 1, 2, -1]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30_000), width=st.integers(1, 300), a=st.floats(0, 1), b=st.floats(0, 1),
       seed=st.integers(0, 1000))
def test_pyramid_gives_the_same_extremes_as_a_full_scan(n: int, width: int, a: float, b: float,
                                                        seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.integers(0, 2 * n, n)).astype(np.float64)
    y = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    y[rng.random(n) < 0.01] = np.nan
    lo, hi = sorted((a * 2 * n, b * 2 * n))
    got = Curve(x, y, fan=4).columns(lo, hi, width)
    ref = min_max_columns(x, y, lo, hi, width)
    assert np.array_equal(got.count, ref.count)
    # extremes, NaN markers and the line's last values land in exactly the same columns
    assert np.array_equal(got.low, ref.low, equal_nan=True)
    assert np.array_equal(got.high, ref.high, equal_nan=True)
    assert np.array_equal(got.last, ref.last, equal_nan=True)
    assert np.array_equal(got.non_finite, ref.non_finite)


def test_pyramid_never_shows_points_after_the_range_end() -> None:
    x = np.arange(100_000, dtype=np.float64)
    y = np.zeros(x.size)
    y[50_001:] = 1000.0  # a replay at step 50,000 must not show what came after it
    cols = Curve(x, y).columns(0, 50_000, 80)
    assert np.nanmax(cols.high) == 0.0
    assert cols.count.sum() == 50_001


def test_moving_average_states_its_window_and_skips_non_finite() -> None:
    y = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    assert moving_average(y, 2).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0]
    assert moving_average(y, 1)[1] == 3.0
    only_nan = moving_average(np.array([np.nan, np.nan, 2.0]), 2)
    assert np.isnan(only_nan[0]) and np.isnan(only_nan[1]) and only_nan[2] == 2.0


def test_nice_range_is_never_empty() -> None:
    assert nice_range(3.0, 3.0, log=False)[0] < 3.0 < nice_range(3.0, 3.0, log=False)[1]
    lo, hi = nice_range(-3.0, -3.0, log=True)  # decades: a flat curve at 1e-3
    assert lo < -3.0 < hi
    assert nice_range(-2.0, 308.25, log=True) == (-2.0, 308.25)  # 1.8e308 without overflow
    assert nice_range(np.nan, np.nan, log=False) == (0.0, 1.0)


def _plot_rows(text: str) -> list[str]:
    return [line[8:] for line in text.splitlines()[1:]]


def test_chart_draws_a_spike_and_marks_a_nan() -> None:
    x = np.arange(10_000, dtype=np.float64)
    y = np.ones(x.size)
    y[2_500] = 100.0
    y[7_500] = np.nan
    spec = ChartSpec("loss", [Series(Curve(x, y), "green", "raw", mark_non_finite=True)], (0, 9_999))
    text = render_chart(spec, 48, 6).plain
    rows = _plot_rows(text)
    assert len(rows) == 5 and all(len(r) == 40 for r in rows)
    # the spike reaches the top row a quarter of the way in; the NaN is an x in the top row
    top = rows[0]
    assert top[10] != "\u2800"
    assert top[30] == "x"
    assert text.splitlines()[1].startswith("    104")  # 100 and a little room
    assert "loss" in text.splitlines()[0] and "raw" in text.splitlines()[0]


def test_log_scale_spreads_decades() -> None:
    x = np.arange(4, dtype=np.float64)
    y = np.array([1000.0, 100.0, 10.0, 1.0])
    linear = _plot_rows(render_chart(ChartSpec("l", [Series(Curve(x, y), "green")], (0, 3)), 28, 9).plain)
    log = _plot_rows(render_chart(ChartSpec("l", [Series(Curve(x, y), "green")], (0, 3), log=True), 28, 9).plain)

    def lowest_row_drawn(rows: list[str], col: int) -> int:
        return max(r for r, row in enumerate(rows) if row[col] not in ("\u2800", " "))

    # the points sit in cells 0, 6, 13 and 19; the segment 100 -> 10 is drawn in cell 13.
    # On a linear axis it is squashed against the bottom; on a log axis it climbs a third.
    assert lowest_row_drawn(linear, 13) >= 7
    assert lowest_row_drawn(log, 13) < lowest_row_drawn(log, 19) == 7


def test_labels_and_axis() -> None:
    assert format_number(0.000123) == "1.2e-4"
    assert format_number(12345.0) == "12,345"
    assert format_number(1040.0) == "1,040"
    assert format_number(2.5e7) == "2.5e7"
    assert format_number(float("nan")) == "nan"
    axis = render_step_axis((0, 1_000_000), 60).plain
    assert axis.split()[:2] == ["step", "0"] and axis.rstrip().endswith("1,000,000") and "500,000" in axis


@pytest.mark.parametrize("width,height", [(1, 1), (9, 2), (200, 60)])
def test_chart_sizes_and_empty_data(width: int, height: int) -> None:
    empty = Curve(np.zeros(0), np.zeros(0))
    text = render_chart(ChartSpec("sharpness", [Series(empty, "blue", "hessian")], (0, 1)), width, height)
    assert len(text.plain.splitlines()) == max(height, 2)


def _labels(text: str) -> list[str]:
    """The y-axis labels of a rendered chart, top to bottom."""
    return [line[:7].strip() for line in text.splitlines()[1:] if line[:7].strip()]


def _value(label: str) -> float:
    return float(label.replace(",", "").replace("e", "e+").replace("e+-", "e-"))


def test_non_negative_quantities_start_at_their_data() -> None:
    x = np.arange(200, dtype=np.float64)
    loss = 0.06 + 0.8 * np.exp(-x / 30)
    grad = np.abs(np.sin(x / 7)) * 5 + 0.007
    for y in (loss, grad):
        spec = ChartSpec("q", [Series(Curve(x, y), "green")], (0, 199), start_at_data=True)
        labels = _labels(render_chart(spec, 50, 6).plain)
        assert _value(labels[-1]) == pytest.approx(y.min(), rel=0.01) and not labels[-1].startswith("-")
    # without the flag (a quantity that may be negative) the axis is padded below the data
    padded = _labels(render_chart(ChartSpec("q", [Series(Curve(x, grad), "green")], (0, 199)), 50, 6).plain)
    assert padded[-1].startswith("-")
    # a flat curve at zero keeps zero as its floor
    flat = _labels(render_chart(ChartSpec("q", [Series(Curve(x, 0 * x), "green")], (0, 199),
                                          start_at_data=True), 50, 6).plain)
    assert flat[-1] == "0"


def test_log_axis_comes_from_the_positive_data() -> None:
    x = np.arange(100, dtype=np.float64)
    sharp = 100 + x  # one estimate of 0 and one negative: not on a log axis, not its floor
    sharp[10], sharp[20] = 0.0, -3.0
    labels = _labels(render_chart(ChartSpec("s", [Series(Curve(x, sharp), "blue")], (0, 99), log=True,
                                            start_at_data=True), 50, 6).plain)
    assert _value(labels[-1]) == pytest.approx(100, rel=0.01) and _value(labels[0]) == pytest.approx(199, rel=0.01)
    # a noisy mini-batch loss: its lowest 1% sits on the bottom row instead of stretching the axis
    rng = np.random.default_rng(0)
    raw = np.exp(rng.normal(np.log(0.3), 0.3, 5000))
    raw[::500] = 1e-6
    spec = ChartSpec("loss", [Series(Curve(np.arange(5000.0), raw), "grey", robust_low=True)], (0, 4999),
                     log=True, start_at_data=True)
    assert _value(_labels(render_chart(spec, 60, 8).plain)[-1]) > 0.05


def test_a_threshold_far_above_the_data_does_not_flatten_it() -> None:
    """An LR swept to ~0 makes 2/lr huge: the axis follows the sharpness, the line leaves the
    chart at the top and the legend says so."""
    x = np.arange(1000, dtype=np.float64)
    sharp = 5 + 3 * np.sin(x / 50)
    lr = 0.1 * (1 + np.cos(np.pi * x / 999)) / 2 + 1e-9
    spec = ChartSpec("sharpness", [Series(Curve(x, sharp), "blue", "hessian"),
                                   Series(Curve(x, 2 / lr), "red", "stability threshold", reference=True)],
                     (0, 999), start_at_data=True)
    text = render_chart(spec, 60, 8).plain
    assert _value(_labels(text)[0]) < 30 and "stability threshold ↑" in text.splitlines()[0]
    # near the edge of stability the line is on the chart, and the legend has no arrow
    near = ChartSpec("sharpness", [Series(Curve(x, sharp), "blue", "hessian"),
                                   Series(Curve(x, np.full(x.size, 9.0)), "red", "stability threshold", reference=True)],
                     (0, 999), start_at_data=True)
    near_text = render_chart(near, 60, 8).plain
    assert "stability threshold  " in near_text.splitlines()[0] + "  " and "↑" not in near_text
    assert _value(_labels(near_text)[0]) >= 9.0


def test_a_later_series_owns_the_cells_it_passes() -> None:
    """The smoothed curve reads through the raw points' spread: where it passes, its dots alone."""
    x = np.arange(400, dtype=np.float64)
    raw = np.where(x % 2 == 0, 0.0, 1.0)  # fills every cell of the plot
    smooth = np.full(x.size, 0.5)
    spec = ChartSpec("loss", [Series(Curve(x, raw), "grey"), Series(Curve(x, smooth), "green")], (0, 399))
    rows = _plot_rows(render_chart(spec, 48, 6).plain)
    full, line = "\u28ff", "\u2824"  # every dot; the two dots of a line through the cell's middle
    assert rows[1] == rows[3] == full * 40  # the raw spread alone above and below the line
    assert rows[2] == line * 40  # not every dot: the smoothed line's own
