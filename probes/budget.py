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
