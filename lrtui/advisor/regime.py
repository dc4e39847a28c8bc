"""The regime of a phase from its loss (and accuracy): converging, equilibrium, chance — at the LR in force.

The test, on the usable losses (``series.py``) of the phase after its warm-up (``phases.py``):

- Window: the losses of the last half of those optimizer steps (SASA+'s leaky bucket keeps a
  recent fraction too), split into ``BATCHES`` = 10 consecutive batches of equal count; their
  means are nearly independent even though successive losses are not. The rates are per optimizer
  step, so a logging stride that changed does not stretch the window.
- Trend *at the LR in force*: least squares of the batch means of log(loss) (of the loss itself
  when a loss of the window is not positive) on their **LR-time** τ = Σ LR × steps
  (``StepSeries.lr_time``), in units of optimizer steps at the LR of the window's last step.
  The change across the window, ``exp(slope × span) - 1`` with span the window's length in
  optimizer steps, and its 90% t-interval [lo, hi] (8 degrees of freedom), are then the change
  that a window-length *at the current LR* would make. At a constant LR τ is the step and this is
  the plain trend. Under a decaying LR the progress the window made per unit of LR-time is scaled
  down to what the current, smaller LR makes of it; nothing of a fall is "explained" by the LR
  falling (an earlier version let the LR's own log change d explain a fall of up to |d|, and
  called a run still learning under a cosine decay stationary: docs/validation.md).
- A robust twin of that trend: the Theil-Sen slope of the same batch means on the same axis and
  its distribution-free 90% interval (``trend.py``), which one batch holding a spike cannot move.
- Verdict, in this order:
  1. ``converging`` when the last batch mean is below ``CONVERGED_LOSS`` (1e-2, the paper's test);
  2. ``converging`` when the loss falls significantly (hi < 0) and by more than ``NEGLIGIBLE``
     (2%) across the window at the LR in force: a slow, steady decline is converging at any rate,
     a significant but negligible one (an annealed tail over thousands of losses) is not;
  3. ``chance`` when the run is at chance (``accuracy.py`` when it logs an accuracy; else the
     median batch at or above ``CHANCE_FRACTION`` of the initial loss and not significantly below
     the phase's starting level) and, without an accuracy, the loss is not falling by more than
     ``STATIONARY_BAND`` (lo > -band): the evidence that nothing is being learned must be as
     strong as the noise allows; a logged accuracy at chance decides alone once rule 2 did not fire;
  4. ``equilibrium`` when the loss has *stopped falling*: its fastest plausible decline (from lo)
     is at most ``SLOWDOWN`` = 1/4 of the phase's average decline since its starting level (the
     median of its first ``HEAD`` log losses), both per optimizer step at the LR in force (a
     short window of a slow decline keeps its pace: that is no equilibrium); in an *annealed*
     phase (LR at or below ``ANNEALED`` = 0.1 × its LR where judging began) also when the
     fastest plausible decline is below ``NEGLIGIBLE``; in a phase after an LR step (a jump or an
     applied action) also when it has not fallen significantly since its start and does not fall
     now (least squares and Theil-Sen: hi >= 0), having no pace of its own to have stopped
     against (a regime only: ``settled`` still needs the stopped test); or when the logged accuracy is above
     chance (so not regime 3) while the loss is not falling (rule 2 did not fire): of the paper's
     three regimes only this one is left — but never for a loss at or above ``FAR_ABOVE`` × its
     start, nor while the robust trend falls significantly by more than ``NEGLIGIBLE``;
  5. otherwise no verdict yet.
  The verdict also says whether the evidence is enough to act on (``settled``), and that test is
  one-sided: with 95% confidence the loss declines across the window by no more than
  ``STATIONARY_BAND`` at the LR in force (lo above -band) *and* has stopped falling against the
  fall so far (above), and the phase is not annealed (its schedule already made the x0.1 drop;
  on the corpus a further drop there does not pay). Advice that acts on an equilibrium
  (``drop_lr``, ``start_averaging``) needs it. The question is whether more steps at this LR
  still pay, i.e. how much the loss may still *fall*; a rise is no reason to stay (a significant
  one is not an equilibrium at all). A two-sided test (the whole interval within ±band) asks for
  evidence a chaotic equilibrium logged at a stride cannot give: at stride 8 its log loss
  scatters by ~0.7 per logged step, so 10,000 optimizer steps (1,250 values; the window holds
  625) bound the change to about ±17% whatever the estimator, and rare spikes widen the upper
  side most.
- Checks run at phase lengths spaced geometrically (every ``CHECK_MIN`` logged steps, or
  ``CHECK_GROWTH``-fold), amortized O(1) per event and identical whichever way the events come. A
  regime is confirmed after ``CONFIRM`` equal verdicts in a row (``RegimeConfirmation``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrtui.advisor.series import LOG_FLOOR, StepSeries
from lrtui.advisor.trend import sen_interval

#: Mean train loss below which a phase has converged (the paper's regime-1 test).
CONVERGED_LOSS = 1e-2
#: Batches the test window is split into.
BATCHES = 10
#: Two-sided 90% Student-t quantile for BATCHES - 2 = 8 degrees of freedom (one-sided 95%).
T_QUANTILE = 1.8595
#: Largest relative decline across the window (beyond the LR's share) that still counts as stationary.
STATIONARY_BAND = 0.10
#: A decline smaller than this across the window (at the LR in force) is no progress worth more
#: steps, however significant: the ground truth's own "falls" (docs/validation.md) is a fall of
#: more than 2% over its horizon. It matters at the end of an annealing schedule, where the
#: projected trend is tiny and, over thousands of losses, significant.
NEGLIGIBLE = 0.02
#: A phase whose LR is at or below this fraction of its LR where its judging began is *annealed*:
#: its schedule has made the drop ``drop_lr`` would advise (x0.1). There the stopped-falling test
#: has no power (the window holds little LR-time), so a decline at the LR in force bounded
#: below ``NEGLIGIBLE`` counts as stopped, and no drop or averaging advice comes.
ANNEALED = 0.1
#: Equilibrium needs the window's fastest plausible decline to be at most this fraction of the
#: phase's average decline before the window: the loss has *stopped* falling.
SLOWDOWN = 0.25
#: Losses at the start of a phase whose mean is its starting level for that comparison.
HEAD = 10
#: A loss that stays at or above this fraction of the initial loss is at chance (no accuracy logged).
CHANCE_FRACTION = 0.9
#: A loss at or above this multiple of the initial loss is never an equilibrium (the factor the
#: divergence rule calls a blow-up, as LR-range tests do).
FAR_ABOVE = 4.0
#: Fewest usable losses after a phase's warm-up before its first test (2 per batch over half).
MIN_SEGMENT = 4 * BATCHES
#: Check spacing: every CHECK_MIN logged steps, or CHECK_GROWTH times the length, whichever is more.
CHECK_MIN = 10
CHECK_GROWTH = 1.03
#: Equal verdicts in a row needed to change a phase's confirmed regime.
CONFIRM = 2


@dataclass(frozen=True)
class WindowVerdict:
    """The outcome of one regime test.

    Attributes:
        regime: ``converging``, ``equilibrium``, ``chance`` or None (no verdict yet).
        settled: the loss declines by no more than the band beyond the LR's share (one-sided 95%)
            and has stopped falling: enough evidence to act on an equilibrium.
        reached: converged by level (mean of the last batch below ``CONVERGED_LOSS``).
        level: mean loss over the window; ``means_last``: of its last batch.
        change, lo, hi: relative change across the window and its 90% interval.
        lr_change: relative change of the LR across the window (0 at a constant LR).
        start, stop: the window as logged-step indices [start, stop).
        robust: (change, lo, hi) across the window from the Theil-Sen slope of the same batch
            means and its distribution-free 90% interval (``trend.py``).
    """

    regime: str | None
    settled: bool
    reached: bool
    level: float
    change: float
    lo: float
    hi: float
    lr_change: float
    start: int
    stop: int
    means_last: float
    robust: tuple[float, float, float] = (0.0, -math.inf, math.inf)

    @property
    def robustly_falling(self) -> bool:
        """The Theil-Sen trend (``trend.py``) at the LR in force falls significantly (its 90%
        interval below 0) and by more than ``NEGLIGIBLE`` across the window: a decline that
        one batch holding a spike cannot fake."""
        change, _, hi = self.robust
        return hi < 0.0 and change < -NEGLIGIBLE

    @property
    def fell_beyond_band(self) -> bool:
        """The loss provably fell by more than the band across the window at the LR in force."""
        return self.hi < -STATIONARY_BAND


def next_check(length: int) -> int:
    """The phase length (in logged steps) of the test after one at ``length``."""
    return max(length + CHECK_MIN, math.ceil(length * CHECK_GROWTH))


def judge_window(s: StepSeries, start: int, stop: int, initial_loss: float | None,
                 at_chance: bool | None, after_step: bool = False) -> WindowVerdict | None:
    """Test the judged part [start, stop) of a phase (logged-step indices); None when it holds
    too few usable losses.

    Args:
        initial_loss: the run's initial loss level, for chance without an accuracy.
        at_chance: what the logged accuracy says (``accuracy.py``): True at chance, False above
            it, None when the run logs none (then the loss decides).
        after_step: the phase began at an LR jump or an applied LR action, not at the run's start.
    """
    at, steps = s.loss_at.a, s.step.a
    j0, j1 = s.usable_before(start), s.usable_before(stop)
    if j1 - j0 < MIN_SEGMENT:
        return None
    # the losses after the middle optimizer step of the part, never more than half of its losses
    middle = (steps[at[j0]] + steps[at[j1 - 1]]) / 2.0
    by_steps = j1 - int(np.searchsorted(steps[at[j0:j1]], middle, side="right")) - j0
    half = (j1 - j0) // 2
    if by_steps >= 2 * BATCHES:
        half = min(by_steps, half)
    size = half // BATCHES
    w0 = j1 - BATCHES * size
    edges = w0 + size * np.arange(BATCHES + 1)
    P = s.cum_loss.a
    means = (P[edges[1:]] - P[edges[:-1]]) / size
    log = s.cum_nonpos.a[j1] == s.cum_nonpos.a[w0]
    trend = (s.cum_log.a[edges[1:]] - s.cum_log.a[edges[:-1]]) / size if log else means
    x, span, d = _lr_time_axis(s, edges)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    mean = float(trend.mean())
    slope = float(xc @ (trend - mean)) / sxx if sxx > 0 else 0.0
    resid = trend - mean - slope * xc
    se = math.sqrt(float(resid @ resid) / (BATCHES - 2) / sxx) if sxx > 0 else math.inf
    sen = sen_interval(x, trend)  # the robust twin: Theil-Sen slope and its interval
    if log:
        change, lo, hi = (_expm1(slope * span), _expm1((slope - T_QUANTILE * se) * span),
                          _expm1((slope + T_QUANTILE * se) * span))
        robust = (_expm1(sen[0] * span), _expm1(sen[1] * span), _expm1(sen[2] * span))
        typical = math.exp(float(np.median(trend)))
    else:
        scale = span / max(abs(mean), 1e-300)
        change, lo, hi = slope * scale, (slope - T_QUANTILE * se) * scale, (slope + T_QUANTILE * se) * scale
        robust = (sen[0] * scale, sen[1] * scale, sen[2] * scale)
        typical = float(np.median(means))
    reached = bool(means[-1] < CONVERGED_LOSS)
    bounded = lo > -STATIONARY_BAND  # one-sided: the decline at the LR in force is at most the band
    level = float(means.mean())
    positive_start = initial_loss is not None and initial_loss > 0
    initial = initial_loss if initial_loss is not None else 0.0
    loss_chance = positive_start and typical >= CHANCE_FRACTION * initial
    far_above = positive_start and typical >= FAR_ABOVE * initial
    start_fall = _fall_since_start(s, j0, w0, j1, mean, float(resid @ resid) / (BATCHES - 2), size, log)
    # (the head's level against the window's mean level: a level, not a trend, so no projection)
    fell_since_start = start_fall is not None and start_fall[0] > T_QUANTILE * start_fall[1]
    if loss_chance and at_chance is None:  # the loss decides: it must not have fallen below its start
        loss_chance = not fell_since_start
    chance = at_chance if at_chance is not None else loss_chance
    stopped = start_fall is not None and _stopped_falling(s, j0, w0, j1, lo, log,
                                                          start_fall[0] - T_QUANTILE * start_fall[1])
    lr_begin, lr_now = float(s.lr.a[start]), float(s.lr.a[at[j1 - 1]])
    annealed = lr_begin > 0 and 0 < lr_now <= ANNEALED * lr_begin
    if annealed and lo > -NEGLIGIBLE:  # the schedule took the LR down: what is left to gain at it is negligible
        stopped = True
    # a phase after an LR step that has not fallen since its start and does not fall now has no
    # pace of its own to have stopped against; not converging, not at chance (the rules above),
    # it is in the regime that is left, equilibrium, as with an accuracy above chance below; the
    # evidence is not enough to act on (``settled`` still needs the bound and the stopped test)
    flat_after_step = after_step and hi >= 0.0 and robust[2] >= 0.0 and not fell_since_start
    rising = lo > 0.0  # a significant rise: not stationary
    if reached or (hi < 0.0 and change < -NEGLIGIBLE):
        regime: str | None = "converging"
    elif chance and (lo > -STATIONARY_BAND or (at_chance is True and not fell_since_start)):
        # the loss must not fall by more than the band, as strongly as the noise allows; or, with
        # a logged accuracy at chance, the loss has learned nothing either: not significantly
        # below the phase's starting level, and not falling significantly now (rule 2 did not fire)
        regime = "chance"
    elif not far_above and not rising and (stopped or flat_after_step or at_chance is False) and not (
            robust[2] < 0.0 and robust[0] < -NEGLIGIBLE):  # a slow, significant decline is no equilibrium
        regime = "equilibrium"
    else:
        regime = None
    return WindowVerdict(regime, bounded and stopped and not annealed, reached, level, change, lo, hi, _expm1(d),
                         int(at[w0]), int(at[j1 - 1]) + 1, float(means[-1]), robust)


def _lr_time_axis(s: StepSeries, edges: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The window's batches on the LR-time axis, in optimizer steps at the LR in force.

    Returns (x, span, d): x[k] = τ at the middle of batch k / the LR of the window's last logged
    step (``StepSeries.lr_time``); span = the window's length in optimizer steps (the spacing of
    the batch middles × ``BATCHES``, as the change across the window is defined); d = the log
    change of the LR across the window (reported, 0 at a constant LR). A slope per unit of x
    times span is the change across a window-length *at the LR in force*: at a constant LR x is
    the optimizer step and this is the plain trend; under a decaying LR the progress the window
    made per unit of LR-time is scaled down to what the current, smaller LR makes of it.
    """
    at, steps, tau, lr = s.loss_at.a, s.step.a, s.lr_time.a, s.lr.a
    first, last = at[edges[:-1]], at[edges[1:] - 1]
    lr_first, lr_now = lr[at[edges[0]]], lr[last[-1]]
    d = math.log(lr_now / lr_first) if lr_first > 0 and lr_now > 0 else 0.0
    now = lr_now if lr_now > 0 else 1.0
    x = (tau[first] + tau[last]) / (2.0 * now)
    middles = (steps[first] + steps[last]) / 2.0
    span = float(middles[-1] - middles[0]) * BATCHES / (BATCHES - 1)
    if not float(x[-1] - x[0]) > 0:  # no LR-time passed (a LR of 0): the steps themselves
        x = middles.astype(np.float64)
    return x, span, d


def _expm1(x: float) -> float:
    return math.expm1(min(x, 700.0))


def _fall_since_start(s: StepSeries, j0: int, w0: int, j1: int, window_mean: float, batch_var: float, size: int,
                      log: bool) -> tuple[float, float] | None:
    """How far the window's mean (log) loss lies below the phase's starting level, and the
    standard error of that difference; None when the phase has no head before its window.

    The starting level is the *median* of the phase's first ``HEAD`` (log) losses: a robust
    level, so that one blow-up among them (a large LR's loss of 15 at step 10 of a run whose
    loss sits at chance, 2.3) does not make a flat loss look fallen below its start. The errors
    come from the window's batch means (their residual variance about the trend, ``batch_var``,
    over ``size`` losses each); the head's is that per-loss variance over its ``HEAD`` losses,
    times π/2 for a median. A fall more than ``T_QUANTILE`` errors (one-sided 95%) means the
    loss has fallen below its start, so it is not at chance: the band test has power only
    against a 10% change within the window, this one sees any fall the noise allows since the
    phase began.
    """
    head = min(HEAD, w0 - j0)
    if head <= 0:
        return None
    values = s.loss.a[j0:j0 + head]
    first = float(np.median(np.log(np.maximum(values, LOG_FLOOR)) if log else values))
    if not log:
        scale = max(abs(window_mean), 1e-300)
        window_mean, first, batch_var = window_mean / scale, first / scale, batch_var / scale / scale  # scale² may underflow
    return first - window_mean, math.sqrt(batch_var / BATCHES + batch_var * size / head * math.pi / 2.0)


def _stopped_falling(s: StepSeries, j0: int, w0: int, j1: int, lo: float, log: bool,
                     slowest_fall: float) -> bool:
    """True when the window's fastest plausible decline (at the LR in force) is at most
    ``SLOWDOWN`` × the slowest plausible average decline of the phase before it (both per
    optimizer step at the LR in force: the time since the head is LR-time / that LR).
    ``slowest_fall``: the lower confidence bound of the fall from the phase's head to the window
    (``_fall_since_start``): a head that the noise put high must not make a slow decline look as
    if it had stopped."""
    head = min(HEAD, w0 - j0)
    steps, at, tau = s.step.a, s.loss_at.a, s.lr_time.a
    lr_now = float(s.lr.a[at[j1 - 1]])
    now = lr_now if lr_now > 0 else 1.0
    elapsed = (tau[at[(w0 + j1) // 2]] - tau[at[j0 + head // 2]]) / now
    span = max(float(steps[at[j1 - 1]] - steps[at[w0]]), 1.0)
    if elapsed <= 0:
        return False
    average_rate = slowest_fall / elapsed
    if log:
        fall = -math.log1p(lo) if lo > -1.0 else math.inf
    else:
        fall = -lo
    return average_rate > 0 and max(0.0, fall) / span <= SLOWDOWN * average_rate


class RegimeConfirmation:
    """Hysteresis: a phase's regime changes only after ``CONFIRM`` equal verdicts in a row."""

    __slots__ = ("confirmed", "_candidate", "_count", "_entry_level")

    def __init__(self) -> None:
        self.confirmed = "warmup"
        self._entry_level = math.inf  # the window's mean loss when the regime was confirmed
        self._candidate: str | None = None
        self._count = 0

    def feed(self, verdict: WindowVerdict) -> bool:
        """Add one verdict; True when it changed the confirmed regime.

        Leaving a stationary regime (equilibrium, chance) for ``converging`` takes more than a
        significant slope, or the tail of a decline and a few spikes in a noisy equilibrium flip
        a regime to and fro: the convergence level, or evidence that the loss falls by more than
        ``STATIONARY_BAND`` across the window (the interval's upper end below -band). From
        ``equilibrium`` there is one more way out: the robust (Theil-Sen) trend falls
        significantly and by more than ``NEGLIGIBLE`` *and* the window's level lies at least
        ``STATIONARY_BAND`` below the level at which the equilibrium was confirmed. A slow,
        significant decline is what an equilibrium is not (issue 18 case 3: with noisy labels
        the loss goes on falling a few % per window for thousands of steps, and the band test
        alone kept it `equilibrium` to the end); spikes move neither the robust trend nor a
        level over half the phase.
        """
        regime = verdict.regime
        if (regime == "converging" and self.confirmed in ("equilibrium", "chance") and not verdict.reached
                and not verdict.fell_beyond_band
                and not (self.confirmed == "equilibrium" and verdict.robustly_falling
                         and verdict.level <= (1.0 - STATIONARY_BAND) * self._entry_level)):
            regime = None
        if regime is None or regime == self.confirmed:
            self._candidate, self._count = None, 0
            return False
        if regime == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = regime, 1
        # a phase's first verdict, when it is `converging`, stands at once: it advises nothing
        # and replaces no earlier regime, so there is nothing for the hysteresis to protect
        if self._count >= CONFIRM or (self.confirmed == "warmup" and regime == "converging"):
            self.confirmed = regime
            self._entry_level = verdict.level
            self._candidate, self._count = None, 0
            return True
        return False


__all__ = ["BATCHES", "CHANCE_FRACTION", "CONFIRM", "CONVERGED_LOSS", "MIN_SEGMENT", "RegimeConfirmation",
           "STATIONARY_BAND", "WindowVerdict", "judge_window", "next_check"]
