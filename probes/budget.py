"""The probe's time budget: when a sharpness estimate may run without exceeding its share of wall time."""

from __future__ import annotations


class OverheadBudget:
    """Admits an expensive measurement only when it fits in ``fraction`` of the wall time so far.

    The test is ``probe_seconds + expected <= fraction * wall_seconds``, where ``expected`` is
    what the last measurement took (an exponential average, so one slow estimate does not starve
    the schedule and one fast one does not flood it). Over a run the probe's share therefore
    stays at or under ``fraction``; the first estimate waits until the run has lasted long enough
    to pay for the probe's start-up.

    Args:
        fraction: the share of wall time the probe may spend, e.g. 0.05; 0 never admits a
            measurement, 1 or more admits every one.
    """

    def __init__(self, fraction: float) -> None:
        self.fraction = max(0.0, float(fraction))
        self.expected = 0.0
        self.measurements = 0

    def allows(self, probe_seconds: float, wall_seconds: float) -> bool:
        """True when one more measurement keeps the probe within its share."""
        if self.fraction <= 0:
            return False
        if self.fraction >= 1:
            return True  # "all of it": measure at every opportunity
        return probe_seconds + self.expected <= self.fraction * wall_seconds

    def spent(self, seconds: float) -> None:
        """Record what a measurement took."""
        self.measurements += 1
        self.expected = seconds if self.measurements == 1 else 0.5 * self.expected + 0.5 * seconds
