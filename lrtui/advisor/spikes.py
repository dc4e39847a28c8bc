"""Catapults: loss spikes that recover (Lewkowycz et al. 2020), counted, not mistaken for divergence.

Rule, on the usable losses (``series.py``; index j) in log space:

- The reference before loss j: the mean ``ref`` and standard deviation ``sd`` of the log of the
  last ``REFERENCE`` losses (at least ``MIN_REFERENCE``).
- An excursion starts at the first loss whose log is at least ``H / 2`` above ``ref``, where
  ``H = max(log SPIKE, NOISE × sd)``; ``ref`` and ``H`` are frozen there: the level *before the
  rise began*. (A catapult rises over a few steps; a reference that kept moving would take in
  the rise itself and never see the peak.)
- It is a spike when its peak reaches ``H`` above that reference: four times the level before
  it, and far outside the noise seen (a chaotic equilibrium's losses scatter by a factor of
  several from step to step; those are not catapults).
- It recovered when a later loss is back within ``H / 2`` of the reference (the same threshold
  that opened it: hysteresis), within ``WINDOW`` logged steps; a spike that recovered counts as
  a catapult. An excursion that comes back without reaching ``H`` is noise; a spike that does
  not recover in time is no catapult (``divergence.py`` decides whether it is a divergence).

``SpikeScan.scan`` is incremental over pieces of any size, like ``DivergenceScan``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrtui.advisor.divergence import WINDOW
from lrtui.advisor.series import StepSeries

#: A spike is a loss at least this multiple of its recent (geometric) level ...
SPIKE = 4.0
LOG_SPIKE = math.log(SPIKE)
#: ... and at least this many standard deviations of the recent log losses above it.
NOISE = 5.0
#: Losses the reference is taken over (and the fewest before a spike can be seen).
REFERENCE = 100
MIN_REFERENCE = 3


@dataclass(frozen=True)
class Catapult:
    """A spike that recovered: logged-step indices of its start, peak and recovery, and its height
    (peak loss / reference level)."""

    start: int
    peak: int
    stop: int
    height: float


class SpikeScan:
    """Finds the catapults among the usable losses not yet scanned; state carried between calls."""

    def __init__(self) -> None:
        self._j = 0
        self._open: tuple[int, float, float, int, float] | None = None  # start j, ref, H, peak j, peak log

    def scan(self, s: StepSeries, until: int | None = None) -> list[Catapult]:
        """The catapults that recovered among the losses of logged steps before ``until`` (default:
        all) not scanned yet."""
        j1 = s.usable_before(len(s) if until is None else until)
        j0, self._j = self._j, max(self._j, j1)
        if j1 <= j0:
            return []
        L, L2, Z = s.cum_log.a, s.cum_log2.a, s.cum_nonpos.a
        at = s.loss_at.a
        j = np.arange(j0, j1)
        k = np.minimum(j, REFERENCE)
        lo = j - k
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = (L[j] - L[lo]) / k
            sd = np.sqrt(np.maximum((L2[j] - L2[lo]) / k - ref * ref, 0.0))
        height = np.maximum(LOG_SPIKE, NOISE * sd)
        # a spike is judged in log space: only where the loss and its reference are all positive
        ok = (k >= MIN_REFERENCE) & (Z[j + 1] == Z[lo])
        x = L[j + 1] - L[j]
        found: list[Catapult] = []
        onsets = np.flatnonzero(ok & (x - ref >= height / 2.0))  # where an excursion may begin
        pos = 0
        n = j1 - j0
        while pos < n:
            if self._open is None:
                c = int(np.searchsorted(onsets, pos))
                if c == len(onsets):
                    break
                pos = int(onsets[c])
                jj = j0 + pos
                self._open = (jj, float(ref[pos]), float(height[pos]), jj, float(x[pos]))
                pos += 1
                continue
            start, r, h, peak, peak_x = self._open
            horizon = int(np.searchsorted(at[j0 + pos:j1], at[start] + WINDOW, side="right"))
            if horizon == 0 and pos < n:  # never came back in time: no catapult
                self._open = None
                continue
            back = np.flatnonzero(x[pos:pos + horizon] <= r + h / 2.0)
            seg_end = pos + (int(back[0]) if len(back) else horizon)
            if seg_end > pos:
                m = pos + int(np.argmax(x[pos:seg_end]))
                if x[m] > peak_x:
                    peak, peak_x = j0 + m, float(x[m])
            if len(back):
                stop = j0 + pos + int(back[0])
                if peak_x - r >= h:  # it was a spike, and it came back
                    found.append(Catapult(int(at[start]), int(at[peak]), int(at[stop]), math.exp(peak_x - r)))
                self._open = None
                pos = stop - j0 + 1
            elif pos + horizon < n:  # the window ended in this piece without a recovery
                self._open = None
                pos += horizon
            else:
                self._open = (start, r, h, peak, peak_x)
                break
        return found


__all__ = ["Catapult", "SPIKE", "SpikeScan"]
