"""The regime of a constant-LR segment: converging, equilibrium, chance — from its loss alone.

The test (a SASA+-style batch-means test on the loss, SALSA's fallback; SASA+'s own statistic
needs ⟨x_{k+1}, d_k⟩, which a run does not log):

- Window: the last half of the segment (SASA+'s leaky bucket keeps a recent fraction too), split
  into ``BATCHES`` = 10 consecutive batches; their means are nearly independent even though
  successive losses are not. Given the logged steps' indices, the half is of the optimizer steps
  and the rates below are per optimizer step, so a stride that changed inside the segment (the
  probe thins its per-step metrics when they cost too much) does not stretch the window back into
  the fall or weigh densely logged steps more; at a constant stride it is the same test.
- Slope: least squares of the batch means on their index; the loss's relative change across the
  window is ``slope × BATCHES / mean`` with a 90% t-interval (8 degrees of freedom). When every
  loss of the segment is positive, the batch means are of log(loss) (geometric means) and the
  change is ``exp(slope × BATCHES) - 1``: loss noise is multiplicative, and a few 10x spikes no
  longer swamp the means. The convergence level and the reported level stay arithmetic.
- Chance level: the loss of the untrained model — the first logged loss, or the mean of the first
  ten when lower (a large LR lifts the loss within the first logged steps).
- Verdict, in this order: ``converging`` when the last batch mean is below ``CONVERGED_LOSS``
  (1e-2, the paper's test); *stationary* when the interval lies inside ±``STATIONARY_BAND`` (two
  one-sided tests: with 95% confidence the loss changes by less than 10% across the window) —
  ``chance`` at or above ``CHANCE_FRACTION`` × the initial loss, else ``equilibrium`` provided the
  loss has stopped falling: the window's fastest plausible decline is at most ``SLOWDOWN`` = 1/4 of
  the segment's average decline since its first ``HEAD`` logged steps (a short window of a slow steady decline changes by
  little, but keeps its pace: that is not an equilibrium); else a *plateau* (the window's best
  batch is less than 10% below the best of the ten batches before it, and that gain is at most
  ``SLOWDOWN`` of the fall before it: ``ReduceLROnPlateau``'s rule with half the segment as
  patience) is ``chance`` or ``equilibrium`` the same way — this decides the chaotic equilibrium
  of a large LR, whose spikes make the interval far wider than the band; ``converging``
  when the interval lies below 0 (falling, one-sided 95%, and not provably by less than 10%: so a
  slow steady decline is never called equilibrium); ``chance`` when the loss is not falling and
  stays at or above that fraction of the initial loss (judged on the median batch mean, so one
  catapult spike in the window does not count); otherwise no verdict yet.
- Tests run at checkpoints spaced geometrically in the segment's length (every ``CHECK_MIN`` logged
  steps, or ``CHECK_GROWTH``-fold), so the work is amortized O(1) per event and identical whether the
  events come one at a time or as columns. A regime is confirmed after ``CONFIRM`` equal verdicts in
  a row (hysteresis: one noisy window does not flip it), and a stationary regime is left for
  ``converging`` only when the loss falls by more than the band (see ``RegimeConfirmation``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Sequence

#: Mean train loss below which a segment has converged (the paper's regime-1 test).
CONVERGED_LOSS = 1e-2
#: Batches the test window is split into.
BATCHES = 10
#: Two-sided 90% Student-t quantile for BATCHES - 2 = 8 degrees of freedom (one-sided 95%).
T_QUANTILE = 1.8595
#: Relative change across the window that still counts as stationary.
STATIONARY_BAND = 0.10
#: Equilibrium also needs the window's decline (its upper confidence bound) to be at most this
#: fraction of the segment's average decline before the window: the loss has *stopped* falling.
SLOWDOWN = 0.25
#: Logged steps at the start of a segment whose mean is its starting level for that comparison.
HEAD = 10
#: Fewest logged steps per batch before the plateau rule applies (the minimum of means of fewer
#: losses is mostly noise).
PLATEAU_BATCH = 10
#: A stationary (or non-falling) loss at or above this fraction of the initial loss is chance level.
CHANCE_FRACTION = 0.9
#: Fewest logged steps in a segment before its first test (2 per batch over half the segment).
MIN_SEGMENT = 4 * BATCHES
#: Checkpoint spacing: every CHECK_MIN logged steps, or CHECK_GROWTH times the length, whichever is more.
CHECK_MIN = 10
CHECK_GROWTH = 1.03
#: Equal verdicts in a row needed to change a segment's confirmed regime.
CONFIRM = 2
#: A new segment starts when the LR leaves [lr/(1+tol), lr*(1+tol)] of the segment's first LR.
SEGMENT_TOLERANCE = 0.10


@dataclass(frozen=True)
class WindowVerdict:
    """The outcome of one regime test.

    Attributes:
        regime: ``converging``, ``equilibrium``, ``chance`` or None (no verdict yet).
        reached: converged by level (mean of the last batch below ``CONVERGED_LOSS``).
        level: mean loss over the window.
        change: relative change across the window (negative = falling).
        lo, hi: its 90% confidence interval.
        start, stop: the window as logged-step indices [start, stop).
        means_last: mean loss of the window's last batch.
    """

    regime: str | None
    reached: bool
    level: float
    change: float
    lo: float
    hi: float
    start: int
    stop: int
    means_last: float


def next_check(length: int) -> int:
    """The segment length (in logged steps) of the test after one at ``length``."""
    return max(length + CHECK_MIN, math.ceil(length * CHECK_GROWTH))


def out_of_segment(lr: float, segment_lr: float) -> bool:
    """True when ``lr`` starts a new segment after one that started at ``segment_lr``."""
    return lr > segment_lr * (1.0 + SEGMENT_TOLERANCE) or lr < segment_lr / (1.0 + SEGMENT_TOLERANCE)


def judge_window(prefix: Sequence[float], start: int, stop: int, initial_loss: float | None,
                 log_prefix: Sequence[float] | None = None, steps: Sequence[int] | None = None) -> WindowVerdict:
    """Test the last half of the segment [start, stop) of logged steps.

    Args:
        prefix: prefix sums of the (cleaned) loss: ``prefix[i]`` = sum of the first i losses.
        start, stop: the segment so far, as logged-step indices.
        initial_loss: the run's initial loss level (mean of its first logged losses), for chance.
        log_prefix: prefix sums of the log of the (cleaned) loss, when every loss of the segment is
            positive. The trend, stationarity and chance tests then run on the log loss (batch
            geometric means): a loss is positive and its noise multiplicative, so a few spikes of
            10x — the chaotic equilibrium of a large LR — no longer swamp the batch means. The
            convergence level and the reported level stay arithmetic means (the paper's test).
        steps: the optimizer step of each logged step (non-decreasing). With them the window is
            the last half of the segment's optimizer steps and the rates are per optimizer step;
            without them, logged steps count as evenly spaced.
    """
    length = stop - start
    half = length // 2
    if steps is not None and steps[stop - 1] > steps[start]:
        # the logged steps after the middle optimizer step; at a constant stride, length // 2. Never
        # more than that: the plateau rule looks at as many losses again before the window.
        by_steps = stop - bisect.bisect_right(steps, (steps[start] + steps[stop - 1]) / 2.0, start, stop)
        if by_steps >= 2 * BATCHES:  # else a stride jump left too few losses there: count them evenly
            half = min(by_steps, half)
    size = half // BATCHES
    w0 = stop - BATCHES * size
    means = [(prefix[w0 + (k + 1) * size] - prefix[w0 + k * size]) / size for k in range(BATCHES)]
    level = sum(means) / BATCHES
    reached = means[-1] < CONVERGED_LOSS
    trend = means if log_prefix is None else [
        (log_prefix[w0 + (k + 1) * size] - log_prefix[w0 + k * size]) / size for k in range(BATCHES)]
    mean = sum(trend) / BATCHES
    centre = (BATCHES - 1) / 2.0
    stt = BATCHES * (BATCHES * BATCHES - 1) / 12.0
    slope = sum((k - centre) * (m - mean) for k, m in enumerate(trend)) / stt
    resid = sum((m - mean - slope * (k - centre)) ** 2 for k, m in enumerate(trend))
    se = math.sqrt(resid / (BATCHES - 2) / stt)
    if log_prefix is None:  # relative change across the window, from the arithmetic means
        scale = BATCHES / max(abs(mean), 1e-300)
        change, half = slope * scale, T_QUANTILE * se * scale
        lo, hi = change - half, change + half
        typical = sorted(means)[BATCHES // 2]
    else:  # the same, as a ratio of geometric means: exp(log change) - 1
        log_change, log_half = slope * BATCHES, T_QUANTILE * se * BATCHES
        change, lo, hi = (_expm1(log_change), _expm1(log_change - log_half), _expm1(log_change + log_half))
        typical = math.exp(sorted(trend)[BATCHES // 2])
    # the median batch: one catapult spike inside the window must not lift the level to chance
    chance_level = initial_loss is not None and initial_loss > 0 and typical >= CHANCE_FRACTION * initial_loss
    if reached:
        regime: str | None = "converging"
    elif -STATIONARY_BAND < lo and hi < STATIONARY_BAND and (chance_level or _stopped_falling(
            trend, log_prefix if log_prefix is not None else prefix, start, size, w0, lo, log_prefix is not None,
            steps)):
        regime = "chance" if chance_level else "equilibrium"
    elif _plateau(trend, log_prefix if log_prefix is not None else prefix, start, size, w0, level,
                  log_prefix is not None):
        regime = "chance" if chance_level else "equilibrium"
    elif hi < 0.0:
        regime = "converging"
    elif chance_level:
        regime = "chance"
    else:
        regime = None
    return WindowVerdict(regime, reached, level, change, lo, hi, w0, stop, means[-1])


def _expm1(x: float) -> float:
    return math.expm1(min(x, 700.0))


def _plateau(trend: Sequence[float], prefix: Sequence[float], start: int, size: int, w0: int, level: float,
             log: bool) -> bool:
    """True when the loss made no real new low over the last half of the segment: the window's
    best batch is less than ``STATIONARY_BAND`` below the best of as many batches just before it,
    and that gain is at most ``SLOWDOWN`` × the fall from the segment's first losses to that
    earlier best (a steady decline keeps its pace and is not a plateau). The rule of
    ``ReduceLROnPlateau``, with half the segment as patience. It decides where the loss is too
    noisy for the slope's interval to fit the band — the chaotic equilibrium of a large LR, whose
    spikes widen any interval — while a converging loss keeps making new lows."""
    if size < PLATEAU_BATCH:
        return False
    before = [(prefix[w0 - k * size] - prefix[w0 - (k + 1) * size]) / size for k in range(BATCHES)]
    best_before, best_now = min(before), min(trend)
    head = min(size, HEAD)
    first = (prefix[start + head] - prefix[start]) / head
    gain_now, gain_before = best_before - best_now, first - best_before
    band = -math.log1p(-STATIONARY_BAND) if log else STATIONARY_BAND * abs(level)
    return gain_now <= band and gain_now <= SLOWDOWN * max(gain_before, 0.0)


def _stopped_falling(trend: Sequence[float], prefix: Sequence[float], start: int, size: int, w0: int,
                     lo: float, log: bool, steps: Sequence[int] | None = None) -> bool:
    """True when the window's fastest plausible decline is at most ``SLOWDOWN`` × the segment's
    average decline before it: a slow steady decline keeps its pace and is not an equilibrium.
    ``prefix`` and ``trend`` (the window's batch means) are of the loss, or of its log; the rates
    are per optimizer step when ``steps`` is given, else per logged step."""
    mean = sum(trend) / len(trend)
    # the segment's first few losses: a fast initial fall is not averaged away in a long segment
    head = min(size, HEAD)
    first = (prefix[start + head] - prefix[start]) / head
    window = BATCHES * size
    elapsed, span = (w0 + window / 2.0) - (start + head / 2.0), float(window)
    if steps is not None:
        by_steps = _step_at(steps, w0 + window / 2.0) - _step_at(steps, start + head / 2.0)
        # the window's optimizer steps, each logged one standing for its share (s * window at stride s)
        steps_span = (steps[w0 + window - 1] - steps[w0]) * window / (window - 1)
        if by_steps > 0 and steps_span > 0:
            elapsed, span = by_steps, steps_span
    average_rate = (first - mean) / elapsed if elapsed > 0 else 0.0
    # the window's fastest plausible fall per step, in the same units
    fall = -math.log1p(lo) if log and lo > -1.0 else (math.inf if log else max(0.0, -lo) * abs(mean))
    window_rate = max(0.0, fall) / span
    return average_rate > 0 and window_rate <= SLOWDOWN * average_rate


def _step_at(steps: Sequence[int], x: float) -> float:
    """The optimizer step at a fractional logged-step index, by linear interpolation."""
    i = int(x)
    frac = x - i
    if frac == 0.0 or i + 1 >= len(steps):
        return float(steps[i])
    return steps[i] + frac * (steps[i + 1] - steps[i])


class RegimeConfirmation:
    """Hysteresis: a segment's regime changes only after ``CONFIRM`` equal verdicts in a row."""

    __slots__ = ("confirmed", "_candidate", "_count")

    def __init__(self) -> None:
        self.confirmed = "warmup"
        self._candidate: str | None = None
        self._count = 0

    def feed(self, verdict: WindowVerdict) -> bool:
        """Add one verdict; True when it changed the confirmed regime.

        Leaving a stationary regime (equilibrium, chance) for ``converging`` takes more than a
        significant slope: the loss must fall by more than ``STATIONARY_BAND`` across the window,
        or reach the convergence level. Otherwise the tail of a decline flips a regime to and fro.
        """
        regime = verdict.regime
        if (regime == "converging" and self.confirmed in ("equilibrium", "chance") and not verdict.reached
                and verdict.change > -STATIONARY_BAND):
            regime = None
        if regime is None or regime == self.confirmed:
            self._candidate, self._count = None, 0
            return False
        if regime == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = regime, 1
        if self._count >= CONFIRM:
            self.confirmed = regime
            self._candidate, self._count = None, 0
            return True
        return False


__all__ = [
    "BATCHES",
    "CHANCE_FRACTION",
    "CONFIRM",
    "CONVERGED_LOSS",
    "MIN_SEGMENT",
    "RegimeConfirmation",
    "SEGMENT_TOLERANCE",
    "STATIONARY_BAND",
    "WindowVerdict",
    "judge_window",
    "next_check",
    "out_of_segment",
]
