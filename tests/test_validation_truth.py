"""The validation corpus's ground-truth rules (validation/truth.py), each on plain data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from validation import truth
from validation.truth import (
    action_truth,
    averaging_pays,
    catapults,
    chance_threshold,
    diverged_at,
    drop_pays,
    healthy_before,
    label_point,
    label_run,
    regime,
    trend,
)

STEPS = [i * 50 for i in range(17)]  # a branch of 800 steps evaluated at 17 points


def branch(losses, scores=None):
    return {"steps": STEPS, "loss": list(losses), "score": list(scores if scores is not None else [0.9] * 17)}


def point(loss, frozen, score=0.9, drop=None, step=1000):
    return {"name": "50%", "step": step, "loss": loss, "score": score, "frozen": frozen, "drop": drop}


CP_STEPS, CP_LOSSES = [0, 500, 1000], [2.3, 1.0, 0.5]  # healthy checkpoints


def test_chance_threshold_is_the_majority_share_plus_three_binomial_errors() -> None:
    assert chance_threshold({"metric": "acc", "majority_share": 0.1, "n": 1200}) == pytest.approx(
        0.1 + 3 * math.sqrt(0.09 / 1200))
    assert chance_threshold({"metric": "acc", "majority_share": 0.5, "n": 512}) == pytest.approx(0.5663, abs=1e-4)


def test_regression_chance_is_the_mean_predictors_mse_less_three_standard_errors_as_r2() -> None:
    level = chance_threshold({"metric": "r2", "baseline_mse": 25.0, "square_sd": 35.0, "n": 1000})
    assert level == pytest.approx(3 * 35.0 / (math.sqrt(1000) * 25.0))


def test_trend_of_an_exact_exponential_decline_is_its_change_with_a_tight_interval() -> None:
    losses = [2.0 * math.exp(-0.001 * s) for s in STEPS]
    tr = trend(STEPS, losses)
    assert tr.change == pytest.approx(math.exp(-0.8) - 1)
    assert tr.lo == pytest.approx(tr.change) and tr.hi == pytest.approx(tr.change)


def test_trend_interval_of_flat_noise_holds_zero_about_95_percent_of_the_time_and_widens_with_it() -> None:
    rng = np.random.default_rng(0)
    covered, widths = 0, {0.01: [], 0.2: []}
    for _ in range(400):
        for sd, width in widths.items():
            tr = trend(STEPS, np.exp(sd * rng.standard_normal(17)))
            width.append(math.log1p(tr.hi) - math.log1p(tr.lo))
            covered += sd == 0.01 and tr.lo < 0 < tr.hi
    assert 0.92 <= covered / 400 <= 0.995  # 95% nominal; the lag-1 widening makes it a little wider
    assert np.mean(widths[0.2]) == pytest.approx(20 * np.mean(widths[0.01]), rel=0.1)


def test_trend_widens_for_correlated_residuals(monkeypatch) -> None:
    wave = [1.0 + 0.05 * math.sin(2 * math.pi * s / 1600) for s in STEPS]  # one slow wave: r1 near 1
    alternating = [1.0 + 0.05 * (-1) ** i for i in range(17)]  # r1 < 0: no widening

    def width(losses):
        tr = trend(STEPS, losses)
        return math.log1p(tr.hi) - math.log1p(tr.lo)

    widened = width(wave), width(alternating)
    monkeypatch.setattr(truth, "MAX_AUTOCORRELATION", 0.0)
    plain = width(wave), width(alternating)
    assert widened[0] / plain[0] > 2.0
    assert widened[1] == pytest.approx(plain[1])


def test_trend_is_none_without_positive_finite_losses() -> None:
    assert trend(STEPS, [1.0] * 16 + [math.nan]) is None
    assert trend(STEPS, [1.0] * 16 + [0.0]) is None
    assert trend([0, 1], [1.0, 0.5]) is None


def test_diverged_needs_a_non_finite_loss_or_a_blow_up_that_never_comes_back() -> None:
    steps = [0, 10, 20, 30]
    assert diverged_at(20, steps, [1.0, 0.5, math.nan, math.nan])
    assert diverged_at(20, steps, [1.0, 0.5, 5.0, 9.0])
    assert not diverged_at(20, steps, [1.0, 0.5, 5.0, 0.4])  # a spike that came back
    assert not diverged_at(20, steps, [1.0, 0.5, 3.9, 3.9])  # under 4x the start
    with pytest.raises(ValueError):
        diverged_at(15, steps, [1.0] * 4)


def test_a_recovered_nine_fold_spike_is_one_catapult_and_one_that_stays_up_is_none() -> None:
    steps = list(range(10))
    recovered = catapults(steps, [1.0, 0.5, 0.4, 3.6, 2.0, 0.7, 0.3, 0.2, 0.2, 0.2])
    assert len(recovered) == 1 and recovered[0]["peak_factor"] == pytest.approx(9.0) and recovered[0]["end"] == 5
    assert catapults(steps, [1.0, 0.5, 0.4, 3.6, 3.0, 2.9, 2.8, 2.9, 3.0, 3.1]) == []
    # near zero, x4 of a tiny loss is no spike: the low is floored at 5% of the start
    assert catapults(steps, [1.0, 0.01, 0.001, 0.004, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001]) == []


def test_dropping_pays_only_when_every_late_drop_loss_is_ten_percent_below_every_frozen_one() -> None:
    frozen = branch([1.0] * 17)
    assert drop_pays(frozen, branch([0.89] * 17))
    assert not drop_pays(frozen, branch([0.89] * 16 + [0.95]))
    assert drop_pays(branch([1.0] * 16 + [math.nan]), branch([0.5] * 17)) is None
    assert drop_pays(frozen, branch([0.5] * 16 + [math.inf])) is False


def test_averaging_pays_when_the_average_beats_every_late_iterate_by_ten_percent() -> None:
    assert averaging_pays({**branch([1.0] * 8 + [0.9] * 9), "averaged_loss": 0.8})
    assert not averaging_pays({**branch([1.0] * 8 + [0.9] * 9), "averaged_loss": 0.85})
    assert averaging_pays({**branch([1.0] * 17), "averaged_loss": math.nan}) is False


def test_regime_rules_in_order() -> None:
    falling = branch([1.0 * 0.999 ** s for s in STEPS])
    flat = branch([0.5 + 0.001 * (-1) ** i for i in range(17)])
    assert regime(point(0.005, flat), CP_STEPS, CP_LOSSES, 0.13)[0] == "converging"  # the paper's 1e-2
    assert regime(point(0.5, falling), CP_STEPS, CP_LOSSES, 0.13)[0] == "converging"
    assert regime(point(0.5, flat), CP_STEPS, CP_LOSSES, 0.13)[0] == "equilibrium"
    assert regime(point(0.5, branch(flat["loss"], [0.1] * 17), score=0.1), CP_STEPS, CP_LOSSES, 0.13)[0] == "chance"
    # at chance but the loss falls: a slow start, not chance
    assert regime(point(0.5, branch(falling["loss"], [0.1] * 17), score=0.1), CP_STEPS, CP_LOSSES, 0.13)[0] == "converging"
    # one branch point above chance: it learns at this LR, so not chance (here: stationary loss)
    scores = [0.1] * 16 + [0.2]
    assert regime(point(0.5, branch(flat["loss"], scores), score=0.1), CP_STEPS, CP_LOSSES, 0.13)[0] == "equilibrium"
    assert regime(point(0.5, branch([0.5] * 16 + [math.nan])), CP_STEPS, CP_LOSSES, 0.13)[0] == "unclear"
    rng = np.random.default_rng(1)
    noisy = branch(0.5 * np.exp(0.4 * rng.standard_normal(17)))
    assert regime(point(0.5, noisy), CP_STEPS, CP_LOSSES, 0.13)[0] == "unclear"
    assert regime(point(math.nan, None), [0, 500, 1000], [2.3, 1.0, math.nan], 0.13)[0] == "diverged"
    assert regime(point(10.0, flat), [0, 500, 1000], [2.3, 1.0, 10.0], 0.13)[0] == "diverged"


@pytest.mark.parametrize("exponent", [0.125, 0.2, 0.5])
def test_a_slow_power_law_decline_is_converging_whatever_its_rate(exponent) -> None:
    # loss ~ t^-a over a branch from t = 1600 to 2400 (horizon: half the run so far); a = 0.125 is
    # the noisy-label case's "25% still to fall over ten times the steps"
    t0 = 1600
    losses = [(t0 + s) ** -exponent for s in STEPS]
    name, _, tr = regime(point(losses[0], branch(losses), step=t0), CP_STEPS + [t0], CP_LOSSES + [losses[0]], 0.13)
    assert name == "converging" and tr.change == pytest.approx(1.5 ** -exponent - 1, rel=0.02)


def test_a_decline_under_two_percent_per_horizon_is_equilibrium() -> None:
    losses = [0.5 * (1 - 0.01 * s / 800) for s in STEPS]  # -1% over the horizon, noise-free
    assert regime(point(0.5, branch(losses)), CP_STEPS, CP_LOSSES, 0.13)[0] == "equilibrium"


def test_action_truth() -> None:
    assert action_truth("drop_lr", "equilibrium", True) == "right"
    assert action_truth("drop_lr", "equilibrium", False) == "wrong"
    assert action_truth("drop_lr", "converging", True) == "early"
    assert action_truth("drop_lr", "converging", False) == "wrong"
    assert action_truth("start_averaging", "chance", True) == "wrong"
    assert action_truth("start_averaging", "unclear", True) == "unclear"
    assert action_truth("lower_lr", "chance", None) == "right"
    assert action_truth("lower_lr", "converging", None) == "wrong"
    assert action_truth("lower_lr", "unclear", None, frozen_diverges=True) == "right"
    assert action_truth("rollback", "diverged", None, rollback_target_healthy=False) == "wrong"
    assert action_truth("rollback", "diverged", None, rollback_target_healthy=True) == "right"
    with pytest.raises(ValueError):
        action_truth("raise_lr", "converging", None)


def test_label_point_and_label_run_put_the_rules_together() -> None:
    flat = branch([0.5 + 0.001 * (-1) ** i for i in range(17)])
    flat["averaged_loss"] = 0.3
    p = point(0.5, flat, drop=branch([0.2] * 17))
    label = label_point(p, CP_STEPS, CP_LOSSES, 0.13)
    assert label.regime == "equilibrium" and label.drop_pays and label.averaging_pays
    assert label.actions == {"drop_lr": "right", "start_averaging": "right", "lower_lr": "wrong", "rollback": "wrong"}
    run = {"checkpoints": {"step": CP_STEPS, "loss": CP_LOSSES},
           "chance": {"metric": "acc", "majority_share": 0.1, "n": 1200}, "points": [{**p, "phase": "constant"}]}
    labels = label_run(run)
    assert labels["points"][0]["regime"] == "equilibrium" and labels["points"][0]["phase"] == "constant"
    assert labels["catapults"] == [] and labels["chance_level"] == pytest.approx(0.126, abs=1e-3)


def test_healthy_before_looks_at_the_last_checkpoint_at_or_before_the_step() -> None:
    steps, losses = [0, 10, 20], [1.0, 5.0, math.nan]
    assert healthy_before(9, steps, losses) is True
    assert healthy_before(10, steps, losses) is False
    assert healthy_before(25, steps, losses) is False
    assert healthy_before(-1, steps, losses) is None


def test_the_t_quantiles_are_students() -> None:
    stats = pytest.importorskip("scipy.stats")
    for dof, q in truth.T_975.items():
        assert q == pytest.approx(stats.t.ppf(0.975, dof), abs=6e-4)
