"""When a sharpness measurement runs and how long it may take: an early first estimate, then the budget.

The first estimate is *borrowed*: it runs at the first measured step, whatever the budget says,
and so do the measurements that continue it (a cold start may take more than one measurement's
``max_iters`` products to converge) until every iterative method has logged a converged
estimate, ``EARLY_STEPS`` optimizer steps have passed, or ``EARLY_SLOTS`` measurements were
borrowed. Nothing is given back: the time is spent like any other probe time, and
``OverheadBudget`` admits the next measurement only once the probe's share of wall time is back
under its fraction (the schedule pays it back). After that, a measurement runs when the budget
admits it, with the budget's slack as its deadline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from probes.budget import OverheadBudget

#: The first estimate comes within this many optimizer steps (it is tried at the first one).
EARLY_STEPS = 100
#: Most measurements borrowed for the first estimates.
EARLY_SLOTS = 5
#: Steps without a measurement, after the early ones, before the probe says that none fits.
QUIET_STEPS = 200


@dataclass
class Slot:
    """One admitted measurement: ``out_of_time`` (None: no deadline) and whether it was borrowed."""

    out_of_time: Callable[[], bool] | None
    borrowed: bool


class SharpnessSchedule:
    """Decides, at each measured step, whether a sharpness measurement runs now.

    Args:
        budget: the probe's time budget.
        clock: the clock the deadline is read from (``time.perf_counter``).
    """

    def __init__(self, budget: OverheadBudget, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget = budget
        self.clock = clock
        self.early = True  # still borrowing for the first estimates
        self.borrowed = 0
        self.last_measured: int | None = None  # steps taken at the last measurement
        self.warned = False

    def slot(self, steps: int, probe_seconds: float, wall_seconds: float) -> Slot | None:
        """The measurement to run after ``steps`` optimizer steps, or None.

        Args:
            steps: optimizer steps taken so far by this process.
            probe_seconds: the probe's time so far.
            wall_seconds: wall time since the probe started.
        """
        if self.budget.fraction <= 0:
            return None
        if self.early and (steps > EARLY_STEPS or self.borrowed >= EARLY_SLOTS):
            self.early = False
        if self.early:
            self.borrowed += 1
            return Slot(None, True)
        if not self.budget.allows(probe_seconds, wall_seconds, wall_seconds / max(1, steps)):
            return None
        slack = self.budget.slack(probe_seconds, wall_seconds)
        return Slot(None if math.isinf(slack) else self.out_of_time(max(0.0, slack)), False)

    def out_of_time(self, seconds: float) -> Callable[[], bool]:
        """The deadline ``seconds`` from now, as the eigensolver asks it."""
        deadline = self.clock() + seconds
        clock = self.clock
        return lambda: clock() >= deadline

    def measured(self, steps: int, seconds: float, pending: bool) -> None:
        """Record a measurement that took ``seconds``; ``pending``: an estimate is still unconverged."""
        self.budget.spent(seconds)
        self.last_measured = steps
        if self.early and not pending:
            self.early = False  # every method has its first estimate

    def starved(self, steps: int, step_seconds: float, wall_seconds: float) -> str | None:
        """Once: why no measurement fits, when the per-step metrics alone fill the budget.

        Args:
            steps: optimizer steps taken so far.
            step_seconds: the probe's seconds in its per-step calls so far.
            wall_seconds: wall time since the probe started.
        """
        if self.warned or self.early or wall_seconds <= 0 or not 0 < self.budget.fraction < 1:
            return None
        if steps - (self.last_measured or 0) < QUIET_STEPS:
            return None
        share = step_seconds / wall_seconds
        if share < self.budget.fraction:
            return None  # the probe is paying back a measurement: one will fit
        self.warned = True
        step = wall_seconds / max(1, steps)
        cost = self.budget.expected if self.budget.measurements else 8 * step
        need = share + cost / (QUIET_STEPS * step)
        return (
            f"the per-step metrics alone take {100 * share:.1f}% of wall time, over sharpness_budget="
            f"{self.budget.fraction:g}: no sharpness estimate fits{' after the first' if self.budget.measurements else ''}; "
            f"sharpness_budget={need:.2g} would fit one every ~{QUIET_STEPS} steps"
        )
