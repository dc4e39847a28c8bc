"""The robust trend (``lrtui.advisor.trend``), the LR-time column and the trend at the LR in force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrtui.advisor import Advisor
from lrtui.advisor.series import StepSeries
from lrtui.advisor.trend import sen_interval


def test_sen_slope_ignores_an_outlier_that_moves_least_squares() -> None:
    x = np.arange(10.0)
    y = 2.0 - 0.1 * x
    y[1] += 5.0  # one batch holding a spike
    slope, lo, hi = sen_interval(x, y)
    assert slope == pytest.approx(-0.1) and lo <= -0.1 <= hi
    ls = np.polyfit(x, y, 1)[0]
    assert ls < -0.3  # least squares is pulled far off by the one point


def test_sen_interval_covers_a_zero_slope_about_nine_times_in_ten() -> None:
    r = np.random.default_rng(0)
    x = np.arange(10.0)
    covered = 0
    for _ in range(2000):
        _, lo, hi = sen_interval(x, r.standard_normal(10))
        covered += lo <= 0.0 <= hi
    assert 0.85 <= covered / 2000 <= 0.97


def test_sen_interval_of_too_few_points_is_unbounded() -> None:
    slope, lo, hi = sen_interval(np.array([0.0, 1.0]), np.array([1.0, 3.0]))
    assert slope == 2.0 and lo == -math.inf and hi == math.inf


def _extend(s: StepSeries, steps, lrs) -> None:
    steps = np.asarray(steps, dtype=np.int64)
    n = len(steps)
    s.extend(steps, np.ones(n), np.zeros(n, bool), np.ones(n), np.zeros(n, bool), np.asarray(lrs, float),
             np.zeros(n, bool))


def test_lr_time_sums_lr_times_steps_the_same_whatever_the_blocks() -> None:
    steps = np.arange(0, 100, 5)
    lrs = np.where(steps < 50, 0.1, 0.01)
    lrs = lrs.astype(float)
    lrs[3] = np.nan  # a missing LR counts as the last one seen
    whole, pieces = StepSeries(), StepSeries()
    _extend(whole, steps, lrs)
    for a in range(0, len(steps), 3):
        _extend(pieces, steps[a:a + 3], lrs[a:a + 3])
    assert np.array_equal(whole.lr_time.a, pieces.lr_time.a)
    assert whole.lr_time.a[0] == 0.0
    # each logged step's LR counts for the 5 steps since the one before: steps 5-45 at 0.1, 50-95 at 0.01
    assert whole.lr_time.a[-1] == pytest.approx(0.1 * 45 + 0.01 * 50)


def _events(loss, lr):
    return [{"kind": "step", "step": i, "time": float(i), "loss": float(loss[i]), "grad_norm": 1.0, "lr": [float(lr[i])]}
            for i in range(len(loss))]


def _advise(loss, lr):
    adv = Advisor({"optimizer": {"class": "SGD", "param_groups": [{"lr": float(lr[0])}]}})
    for e in _events(loss, lr):
        adv.update(e)
    return adv.state()


def test_a_loss_still_learning_under_a_decaying_lr_is_converging_not_equilibrium() -> None:
    """Progress per unit of LR-time is constant (gradient flow), the LR decays to a fifth: the loss
    falls more slowly as the LR falls, yet at the LR in force it still falls by ~10% per window.
    Taking the LR's own fall to explain the loss's would call this stationary."""
    n = 3000
    r = np.random.default_rng(1)
    lr = 0.1 * np.exp(np.log(0.2) * np.arange(n) / n)
    tau = np.concatenate([[0.0], np.cumsum(lr[:-1])])
    loss = 2.0 * np.exp(-tau / 150.0) * np.exp(0.05 * r.standard_normal(n))
    st = _advise(loss, lr)
    assert st.regime == "converging"
    assert "drop_lr" not in [x.action for x in st.recommendations]


def test_an_annealed_flat_end_is_equilibrium_without_drop_advice() -> None:
    """A cosine to ~0 over a loss whose noise floor follows the LR (0.3 + 2 LR): at the end the
    loss is level at the LR in force and the schedule has made the x0.1 drop itself, so the
    regime is equilibrium and no drop_lr or start_averaging comes."""
    n = 4000
    r = np.random.default_rng(2)
    lr = 0.05 * 0.5 * (1 + np.cos(np.pi * np.arange(n) / n)) + 1e-6
    loss = (0.3 + 2.0 * lr + np.exp(-np.arange(n) / 100.0)) * np.exp(0.05 * r.standard_normal(n))
    st = _advise(loss, lr)
    assert st.regime == "equilibrium"
    given = [x.action for x in st.recommendations] + [w.recommendation.action for w in st.withdrawn]
    assert "drop_lr" not in given and "start_averaging" not in given
