"""Divergence: non-finite values, a sustained loss blow-up, or a gradient-norm explosion — not a catapult.

Rules, on the sequence of logged steps (index i):

- ``sm[i]``: mean of the last ``SMOOTH`` logged losses; ``initial`` = ``sm[SMOOTH-1]``, the initial
  loss level; ``best`` = the lowest mean of ``REFERENCE`` consecutive logged losses so far (fewer at
  the start). A longer mean for the reference matters: mini-batch losses near the edge of stability
  are heavy-tailed, and the luckiest 10-step mean of a long run lies far below its typical level.
- Non-finite loss or gradient norm: diverged at that step, flagged at once.
- Blow-up: ``sm[i] >= BLOWUP × max(best, FLOOR × initial)`` (the LR-range test's 4×, with a floor so a
  loss that has reached ~0 is not "4× its best" through noise).
- Gradient explosion: the mean log gradient norm of the last ``SMOOTH`` steps at least
  ``GRAD_EXPLOSION``-fold above its mean over all earlier steps.
- A stretch of consecutive steps where either holds is an *excursion*. One that lasts longer than
  ``WINDOW`` logged steps is a divergence that began where the excursion began; one that recovers
  within ``WINDOW`` is a catapult (Lewkowycz et al. 2020) and only an info alert. A non-finite value
  during an excursion dates the divergence from the excursion's start.

The incremental ``DivergenceDetector`` and the vectorized ``detect_divergence`` apply the same rules
to the same prefix sums and give the same answers (tests check this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Logged steps in the smoothing window (and the warm-up before ``best`` is tracked).
SMOOTH = 10
#: Logged steps in the mean whose lowest value is the reference ``best``.
REFERENCE = 100
#: Smoothed loss at this multiple of its best (LR-range tests use 4-5x) is a blow-up.
BLOWUP = 4.0
#: ``best`` is never taken below this fraction of the initial loss when judging a blow-up.
FLOOR = 0.05
#: Smoothed gradient norm at this multiple of its history is an explosion.
GRAD_EXPLOSION = 100.0
LOG_GRAD_EXPLOSION = math.log(GRAD_EXPLOSION)
#: Logged steps an excursion may last and still be a catapult that recovered.
WINDOW = 100


@dataclass(frozen=True)
class Excursion:
    """A stretch of logged steps [start, stop) above the blow-up level; ``stop`` None while ongoing."""

    start: int
    stop: int | None
    peak: float  # highest smoothed loss / blow-up level during it
    loss: bool  # the loss rose (not only the gradient norm)


@dataclass(frozen=True)
class Divergence:
    """Where a divergence began and was flagged (logged-step indices) and why."""

    began: int
    flagged: int
    reason: str


@dataclass(frozen=True)
class BulkDivergence:
    """What ``detect_divergence`` found, plus what an incremental detector needs to carry on."""

    catapults: list[Excursion]
    divergence: Divergence | None
    initial: float | None
    best: float
    ongoing: Excursion | None


class DivergenceDetector:
    """Incremental divergence rules; call ``step`` once per logged step, after extending the prefixes.

    Args:
        loss_prefix: prefix sums of the cleaned loss (non-finite values replaced by the last finite).
        grad_prefix: prefix sums of the cleaned log gradient norm, or None when the run logs none.
    """

    def __init__(self, loss_prefix: Sequence[float], grad_prefix: Sequence[float] | None) -> None:
        self.P = loss_prefix
        self.G = grad_prefix
        self.initial: float | None = None
        self.best = math.inf
        self.excursion_start: int | None = None
        self.excursion_peak = 0.0
        self.excursion_loss = False
        self.divergence: Divergence | None = None

    def resume(self, found: BulkDivergence) -> None:
        """Carry on after ``detect_divergence`` processed the steps so far."""
        self.initial, self.best, self.divergence = found.initial, found.best, found.divergence
        if found.ongoing is not None:
            self.excursion_start = found.ongoing.start
            self.excursion_peak = found.ongoing.peak / BLOWUP
            self.excursion_loss = found.ongoing.loss

    def smoothed(self, i: int) -> float:
        k = min(i + 1, SMOOTH)
        return (self.P[i + 1] - self.P[i + 1 - k]) / k

    def step(self, i: int, non_finite: str | None) -> Excursion | Divergence | None:
        """Judge logged step i; returns a finished catapult, a divergence, or None."""
        if self.divergence is not None:
            return None
        if non_finite is not None:
            began = self.excursion_start if self.excursion_start is not None else i
            self.divergence = Divergence(began, i, non_finite)
            return self.divergence
        if i < SMOOTH - 1:
            return None
        P = self.P
        sm = (P[i + 1] - P[i + 1 - SMOOTH]) / SMOOTH  # self.smoothed(i), inlined: this runs every step
        k = i + 1 if i < REFERENCE else REFERENCE
        ref = (P[i + 1] - P[i + 1 - k]) / k
        if i == SMOOTH - 1:
            self.initial, self.best = sm, ref
            return None
        initial = self.initial
        if self.best > 0 and initial is not None and initial > 0:
            level = BLOWUP * max(self.best, FLOOR * initial)
        else:
            level = math.inf
        loss_up = sm >= level
        grad_up = False
        if self.G is not None:
            g = self.G
            grad_up = (g[i + 1] - g[i + 1 - SMOOTH]) / SMOOTH - g[i + 1 - SMOOTH] / (i + 1 - SMOOTH) >= LOG_GRAD_EXPLOSION
        if ref < self.best:
            self.best = ref
        if loss_up or grad_up:
            ratio = sm / level if level > 0 and math.isfinite(level) else 0.0
            if self.excursion_start is None:
                self.excursion_start, self.excursion_peak, self.excursion_loss = i, ratio, loss_up
            else:
                self.excursion_peak = max(self.excursion_peak, ratio)
                self.excursion_loss = self.excursion_loss or loss_up
            if i - self.excursion_start + 1 > WINDOW:
                reason = "loss blow-up" if self.excursion_loss else "gradient-norm explosion"
                self.divergence = Divergence(self.excursion_start, i, reason)
                return self.divergence
            return None
        if self.excursion_start is not None:
            done = Excursion(self.excursion_start, i, self.excursion_peak * BLOWUP, self.excursion_loss)
            self.excursion_start = None
            return done
        return None


def _trailing_means(prefix: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values (fewer at the start) at each index, from prefix sums."""
    n = len(prefix) - 1
    head = min(window, n)
    lo = np.empty(n)
    lo[:head] = prefix[0]
    if n > window:
        lo[window:] = prefix[1 : n - window + 1]
    count = np.full(n, float(window))
    count[:head] = np.arange(1, head + 1)
    return (prefix[1:] - lo) / count


def detect_divergence(
    loss_prefix: np.ndarray, grad_prefix: np.ndarray | None, non_finite: tuple[int, str] | None
) -> BulkDivergence:
    """The same rules over a whole run at once.

    Args:
        loss_prefix: prefix sums (length n + 1) of the cleaned loss.
        grad_prefix: same for the cleaned log gradient norm, or None.
        non_finite: (index, reason) of the first logged step with a non-finite loss or gradient.

    Returns:
        catapults that recovered before any divergence, the divergence or None, the initial loss
        level, the best smoothed loss, and the excursion still going on at the end (if any).
    """
    n = len(loss_prefix) - 1
    first_bad, bad_reason = non_finite if non_finite is not None else (None, "")
    if n < SMOOTH:
        div = Divergence(first_bad, first_bad, bad_reason) if first_bad is not None else None
        return BulkDivergence([], div, None, math.inf, None)
    P = loss_prefix
    sm = _trailing_means(P, SMOOTH)
    initial = float(sm[SMOOTH - 1])
    ref = _trailing_means(P, REFERENCE)
    # best before step i: min of ref over [SMOOTH-1, i-1]
    run_min = np.minimum.accumulate(ref[SMOOTH - 1:])
    best_before = run_min[:-1]  # aligned with i = SMOOTH .. n-1
    sm_i = sm[SMOOTH:]
    if initial > 0:
        level = BLOWUP * np.maximum(best_before, FLOOR * initial)
        level = np.where(best_before > 0, level, np.inf)
    else:
        level = np.full(len(sm_i), np.inf)
    loss_up = sm_i >= level
    if grad_prefix is not None:
        G = grad_prefix
        # for i = SMOOTH .. n-1: the mean of the last SMOOTH values and of all before them
        recent = (G[SMOOTH + 1 :] - G[1 : n - SMOOTH + 1]) / SMOOTH
        history = G[1 : n - SMOOTH + 1] / np.arange(1, n - SMOOTH + 1)
        grad_up = recent - history >= LOG_GRAD_EXPLOSION
    else:
        grad_up = np.zeros(len(sm_i), dtype=bool)
    above = loss_up | grad_up
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((level > 0) & np.isfinite(level), sm_i / level, 0.0)
    # runs of `above`, as indices into the run (offset SMOOTH)
    padded = np.concatenate([[False], above, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, stops = edges[0::2] + SMOOTH, edges[1::2] + SMOOTH
    catapults: list[Excursion] = []
    divergence: Divergence | None = None
    ongoing: Excursion | None = None
    for s, e in zip(starts.tolist(), stops.tolist()):
        if first_bad is not None and s >= first_bad:
            break
        long_at = s + WINDOW  # the step at which the excursion's length first exceeds WINDOW
        if first_bad is not None and first_bad <= e and first_bad <= long_at:
            # non-finite while the excursion is still on: it began where the excursion began
            divergence = Divergence(s, first_bad, bad_reason)
            break
        if e - s > WINDOW:
            part = slice(s - SMOOTH, long_at + 1 - SMOOTH)
            reason = "loss blow-up" if bool(loss_up[part].any()) else "gradient-norm explosion"
            divergence = Divergence(s, long_at, reason)
            break
        seg = slice(s - SMOOTH, e - SMOOTH)
        found = Excursion(s, None if e == n else e, float(ratio[seg].max()) * BLOWUP, bool(loss_up[seg].any()))
        if e == n:
            ongoing = found
            break
        catapults.append(found)
    if divergence is None and first_bad is not None:
        divergence = Divergence(first_bad, first_bad, bad_reason)
    best = float(run_min[-1])
    return BulkDivergence(catapults, divergence, initial, best, None if divergence else ongoing)


__all__ = [
    "BLOWUP",
    "Divergence",
    "DivergenceDetector",
    "Excursion",
    "FLOOR",
    "GRAD_EXPLOSION",
    "REFERENCE",
    "SMOOTH",
    "WINDOW",
    "detect_divergence",
]
