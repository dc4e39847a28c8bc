"""The probe's time budget: when a sharpness estimate may run without exceeding its share of wall time."""

from __future__ import annotations

import math


#: Training steps one sharpness measurement is guessed to cost before any was timed.
FIRST_GUESS_STEPS = 8.0


class OverheadBudget:
    """Admits an expensive measurement only when it fits in ``fraction`` of the wall time so far.

    The test is ``probe_seconds + expected <= fraction * wall_seconds``, where ``expected`` is
    what the last measurement took (an exponential average, so one slow estimate does not starve
    the schedule and one fast one does not flood it). Before the first measurement its cost is
    guessed as ``FIRST_GUESS_STEPS`` training steps (a forward and gradient on the hessian batch
    plus a few Hessian-vector products of ~2-3 steps each), so even the first estimate waits until
    the run has earned it. Over a run the probe's share therefore stays at or under ``fraction``. A measurement is also given the current slack as a deadline
    (see :meth:`slack`), so an estimate that would take longer than expected stops early and the
    next one continues from where it stopped.

    Args:
        fraction: the share of wall time the probe may spend, e.g. 0.05; 0 never admits a
            measurement, 1 or more admits every one.
    """

    def __init__(self, fraction: float) -> None:
        self.fraction = max(0.0, float(fraction))
        self.expected = 0.0
        self.measurements = 0

    def allows(self, probe_seconds: float, wall_seconds: float, step_seconds: float) -> bool:
        """True when one more measurement keeps the probe within its share.

        Args:
            probe_seconds: the probe's time so far.
            wall_seconds: wall time since the probe started.
            step_seconds: the mean training step, for the first measurement's guessed cost.
        """
        if self.fraction <= 0:
            return False
        if self.fraction >= 1:
            return True  # "all of it": measure at every opportunity
        expected = self.expected if self.measurements else FIRST_GUESS_STEPS * step_seconds
        return probe_seconds + expected <= self.fraction * wall_seconds

    def slack(self, probe_seconds: float, wall_seconds: float) -> float:
        """Seconds the probe may still spend now without exceeding its share (inf when unlimited)."""
        if self.fraction >= 1:
            return math.inf
        return self.fraction * wall_seconds - probe_seconds

    def spent(self, seconds: float) -> None:
        """Record what a measurement took."""
        self.measurements += 1
        self.expected = seconds if self.measurements == 1 else 0.5 * self.expected + 0.5 * seconds


#: Share of the budget the per-step metrics may take before they are thinned; the rest is left
#: for sharpness.
STEP_SHARE = 0.5
#: Most the stride may be raised, as a factor of the user's stride.
MAX_THINNING = 64
#: Shortest window (seconds, and measured steps) over which the per-step share is judged.
WINDOW_SECONDS = 0.5
WINDOW_STEPS = 64


class StrideGovernor:
    """Thins the per-step metrics when they alone would take more than their share of the budget.

    Every ``WINDOW_SECONDS`` (and at least ``WINDOW_STEPS`` optimizer steps) it compares the
    share of wall time spent in the per-step metrics over that window with ``STEP_SHARE *
    fraction``. Over it, the stride is multiplied by the power of two that brings the share
    under (a measured step costs far more than an unmeasured one, so the share falls nearly in
    proportion), up to ``MAX_THINNING`` times the user's stride. Under a quarter of it, the stride
    is halved back toward the user's: halving at most doubles the share, so it lands under half
    of the target and cannot flap back.

    Args:
        fraction: the probe's budget (``sharpness_budget``); 0 (no budget: sharpness off) and 1
            or more (unlimited) never thin.
        stride: the user's stride, the least the governor goes down to.
        enabled: False keeps the user's stride whatever it costs.
    """

    def __init__(self, fraction: float, stride: int, enabled: bool = True) -> None:
        self.target = STEP_SHARE * fraction if enabled and 0 < fraction < 1 else None
        self.base = max(1, int(stride))
        self.stride = self.base
        self.share = math.nan  # the per-step share of the last window judged
        self._mark: tuple[float, float, int] | None = None

    def update(self, now: float, step_seconds: float, steps: int) -> int | None:
        """The new stride when it should change, else None.

        Args:
            now: ``time.perf_counter()``.
            step_seconds: the probe's seconds in its per-step calls so far.
            steps: optimizer steps taken so far.
        """
        if self.target is None:
            return None
        if self._mark is None:
            self._mark = (now, step_seconds, steps)
            return None
        began, seconds, count = self._mark
        if now - began < WINDOW_SECONDS or steps - count < WINDOW_STEPS:
            return None
        self._mark = (now, step_seconds, steps)
        self.share = share = (step_seconds - seconds) / (now - began)
        stride = self.stride
        if share > self.target:
            factor = 2 ** math.ceil(math.log2(share / self.target))
            stride = min(self.base * MAX_THINNING, stride * factor)
        elif share < 0.25 * self.target and stride > self.base:
            stride //= 2
        if stride == self.stride:
            return None
        self.stride = stride
        return stride
