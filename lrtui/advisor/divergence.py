"""Divergence: a non-finite value, a sustained loss blow-up, or a gradient-norm explosion.

Rules, on the usable losses (``series.py``: finite, not skipped; index j) and the usable gradient
norms, judged at each logged step (index i):

- ``sm[j]``: mean of the last ``SMOOTH`` losses; ``initial`` = ``sm[SMOOTH-1]``, the initial loss
  level; ``best`` = the lowest mean of ``REFERENCE`` consecutive losses so far (fewer at the
  start). A longer mean for the reference matters: mini-batch losses near the edge of stability
  are heavy-tailed, and the luckiest 10-step mean of a long run lies far below its typical level.
- Non-finite loss or gradient norm (``series.py`` says which count): diverged at that step,
  flagged at once.
- Blow-up: ``sm[j] >= BLOWUP × max(best, FLOOR × initial)`` (the LR-range test's 4×, with a floor
  so a loss that has reached ~0 is not "4× its best" through noise).
- Gradient explosion: the mean log gradient norm of the last ``SMOOTH`` norms at least
  ``GRAD_EXPLOSION``-fold above its mean over all earlier ones.
- A stretch of consecutive logged steps where either holds (a step with no usable value keeps the
  state of the step before) is an *excursion*. One that lasts longer than ``WINDOW`` logged steps
  is a divergence that began where the excursion began; one that recovers within it was not (a
  catapult: ``spikes.py`` counts those). A non-finite value during an excursion dates the
  divergence from the excursion's start.

``DivergenceScan.scan`` applies the rules to the logged steps not yet scanned, carrying its state
from one call to the next, so one call over a whole run and many calls over its pieces give the
same answer (the advisor's bulk and incremental paths are the same code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrtui.advisor.series import StepSeries

#: Losses in the smoothing window (and the warm-up before ``best`` is tracked).
SMOOTH = 10
#: Losses in the mean whose lowest value is the reference ``best``.
REFERENCE = 100
#: Smoothed loss at this multiple of its best (LR-range tests use 4-5x) is a blow-up.
BLOWUP = 4.0
#: ``best`` is never taken below this fraction of the initial loss when judging a blow-up.
FLOOR = 0.05
#: Smoothed gradient norm at this multiple of its history is an explosion.
GRAD_EXPLOSION = 100.0
LOG_GRAD_EXPLOSION = math.log(GRAD_EXPLOSION)
#: Logged steps an excursion may last and still recover.
WINDOW = 100


@dataclass(frozen=True)
class Divergence:
    """Where a divergence began and was flagged (logged-step indices) and why."""

    began: int
    flagged: int
    reason: str


class DivergenceScan:
    """The divergence rules, applied to each logged step once, in pieces of any size."""

    def __init__(self) -> None:
        self.initial: float | None = None
        self.best = math.inf
        self.divergence: Divergence | None = None
        self._done = 0  # logged steps scanned
        self._j = 0  # usable losses scanned
        self._g = 0  # usable gradient norms scanned
        self._loss_up = False  # the state of the last scanned step with a loss / a gradient norm
        self._grad_up = False
        self._start: int | None = None  # the excursion going on
        self._loss_in_it = False

    def scan(self, s: StepSeries) -> Divergence | None:
        """Judge the logged steps added since the last call; the divergence, once found."""
        a, b = self._done, len(s)
        if self.divergence is not None or a >= b:
            self._done = b
            return None
        self._done = b
        loss_up = self._loss_flags(s, a, b)
        grad_up = self._grad_flags(s, a, b)
        above = loss_up | grad_up
        bad = s.first_bad if s.first_bad is not None and a <= s.first_bad < b else None
        stop = b if bad is None else bad  # the excursions judged before a non-finite value
        i = a
        while i < stop:
            if self._start is None:
                nxt = _first(above, i - a, stop - a, True)
                if nxt is None:
                    break
                self._start, self._loss_in_it = a + nxt, False
                i = a + nxt
            end = _first(above, i - a, stop - a, False)  # the first step below again
            last = stop if end is None else a + end
            long_at = self._start + WINDOW  # where the excursion first lasts longer than WINDOW
            if long_at < last:
                rose = self._loss_in_it or bool(loss_up[i - a:long_at + 1 - a].any())
                self.divergence = Divergence(self._start, long_at, "loss blow-up" if rose else "gradient-norm explosion")
                return self.divergence
            self._loss_in_it = self._loss_in_it or bool(loss_up[i - a:last - a].any())
            if end is None:
                break
            self._start, i = None, last
        if bad is not None:
            began = self._start if self._start is not None and bad <= self._start + WINDOW else bad
            self.divergence = Divergence(began, bad, s.first_bad_reason)
        return self.divergence

    def _loss_flags(self, s: StepSeries, a: int, b: int) -> np.ndarray:
        """Blow-up or not at each logged step of [a, b) (forward-filled where no loss)."""
        j0, j1 = self._j, s.usable_before(b)
        self._j = j1
        flags = np.zeros(j1 - j0, dtype=bool)
        lo = max(j0, SMOOTH - 1)
        if j1 > lo:
            P = s.cum_loss.a
            j = np.arange(lo, j1)
            sm = (P[j + 1] - P[j + 1 - SMOOTH]) / SMOOTH
            k = np.minimum(j + 1, REFERENCE)
            ref = (P[j + 1] - P[j + 1 - k]) / k
            if lo == SMOOTH - 1:
                self.initial, self.best = float(sm[0]), float(ref[0])
            judged = j >= SMOOTH
            best_before = np.minimum.accumulate(np.concatenate([[self.best], ref]))[:-1]
            initial = self.initial if self.initial is not None else math.nan
            with np.errstate(invalid="ignore"):
                level = BLOWUP * np.maximum(best_before, FLOOR * initial)
            level = np.where((best_before > 0) & (initial > 0), level, np.inf)
            flags[lo - j0:] = judged & (sm >= level)
            self.best = min(self.best, float(ref.min()))
        return _fill(flags, s.loss_at.a[j0:j1] - a, b - a, self, "_loss_up")

    def _grad_flags(self, s: StepSeries, a: int, b: int) -> np.ndarray:
        g0 = self._g
        g1 = int(np.searchsorted(s.grad_at.a, b, side="left"))
        self._g = g1
        flags = np.zeros(g1 - g0, dtype=bool)
        lo = max(g0, SMOOTH)
        if g1 > lo:
            G = s.cum_log_grad.a
            g = np.arange(lo, g1)
            recent = (G[g + 1] - G[g + 1 - SMOOTH]) / SMOOTH
            history = G[g + 1 - SMOOTH] / (g + 1 - SMOOTH)
            flags[lo - g0:] = recent - history >= LOG_GRAD_EXPLOSION
        return _fill(flags, s.grad_at.a[g0:g1] - a, b - a, self, "_grad_up")


def _fill(flags: np.ndarray, where: np.ndarray, n: int, holder: DivergenceScan, attr: str) -> np.ndarray:
    """Flags given at some of n logged steps, carried forward to the steps without one (from the
    last flag of the previous piece)."""
    out = np.empty(n, dtype=bool)
    pos = np.full(n, -1)
    pos[where] = np.arange(len(where))
    last = np.maximum.accumulate(pos)
    out[:] = getattr(holder, attr)
    has = last >= 0
    out[has] = flags[last[has]]
    if n:
        setattr(holder, attr, bool(out[-1]))
    return out


def _first(flags: np.ndarray, lo: int, hi: int, value: bool) -> int | None:
    """The first index in [lo, hi) where flags is ``value``, or None."""
    part = flags[lo:hi] if value else ~flags[lo:hi]
    k = int(np.argmax(part)) if len(part) else 0
    return lo + k if len(part) and part[k] else None


__all__ = ["BLOWUP", "Divergence", "DivergenceScan", "FLOOR", "GRAD_EXPLOSION", "REFERENCE", "SMOOTH",
           "WINDOW"]
