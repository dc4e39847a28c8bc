"""Phases of a run: stretches judged as one, split where the LR jumps or an LR action was applied.

A schedule that moves the LR a little at every step (warm-up, linear or cosine decay, OneCycle,
exponential) is one phase, judged with the LR as a covariate (``regime.py``); a step schedule
(StepLR, MultiStepLR, ReduceLROnPlateau, a manual change) starts a new phase at each step.

- *Jump*: at logged step i the LR of param group 0 changed by at least a factor ``JUMP`` from the
  previous logged LR, and its rate of change per optimizer step is at least ``SUDDEN`` times the
  largest of the ``LOOKBACK`` changes before it (a LR that had been still, or moving slowly). So
  a cosine's fast last steps, a warm-up's first doublings or a change of the logging stride are
  no jumps, while a decay ×0.1 after a constant stretch, or a warm restart, is one. A LR that is
  not a positive number is no LR (it neither starts nor ends anything).
- *Applied action*: an ``action`` event (``set_lr`` or ``drop_lr``) starts a phase at the first
  logged step at or after its step.
- *Warm-up*: a phase whose LR rises at its first logged steps is in warm-up until the first
  logged step whose LR does not rise; the regime of a phase is judged after its warm-up.

``PhaseScan.scan`` is incremental over pieces of any size, like the other scans.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from lrtui.advisor.series import StepSeries

#: Smallest LR change factor that can be a jump.
JUMP = 1.25
LOG_JUMP = math.log(JUMP)
#: A jump's rate of change is at least this multiple of the recent ones.
SUDDEN = 4.0
#: Changes looked back at.
LOOKBACK = 3
#: A rise this small is no rise (float noise of a scheduler).
RISE = 1e-9


class PhaseScan:
    """Finds the logged steps where phases start and where their warm-ups end."""

    def __init__(self) -> None:
        self._done = 0
        self._prev_lr = math.nan  # the last positive LR seen, and its step
        self._prev_step = 0
        self._rates: list[float] = []  # the last LOOKBACK rates of change
        self._warm = False  # the current phase is still in warm-up ...
        self._fresh = True  # ... or has not yet shown whether it has one
        self._actions: list[int] = []  # steps of applied LR actions not yet placed

    def action(self, step: int) -> None:
        """An applied LR action from its first step on (arriving before that step's event)."""
        bisect.insort(self._actions, step)

    def scan(self, s: StepSeries) -> list[tuple[int, str]]:
        """[(logged index, what)] for the steps added since the last call: ``"start"`` (the first
        logged step), ``"jump"`` and ``"action"`` (a phase starts there), ``"warmup"`` (its LR rises from
        there) and ``"warmup_end"`` (the first step whose LR does not rise)."""
        a, b = self._done, len(s)
        self._done = b
        if a >= b:
            return []
        lr, steps = s.lr.a[a:b], s.step.a[a:b]
        starts: dict[int, str] = {0: "start"} if a == 0 else {}
        for i in self._action_starts(steps, a):
            starts.setdefault(i, "action")
        pos = np.flatnonzero(np.isfinite(lr) & (lr > 0))  # the steps with a LR, in this piece
        v = lr[pos]
        prev = np.concatenate([[self._prev_lr], v[:-1]])
        prev_step = np.concatenate([[self._prev_step], steps[pos][:-1]])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            change = np.log(v / prev)  # NaN where there was no LR before
        rate = np.abs(change) / np.maximum(steps[pos] - prev_step, 1)
        known = np.concatenate([np.asarray(self._rates, dtype=np.float64), np.where(change == change, rate, np.nan)])
        padded = np.concatenate([np.full(LOOKBACK, np.nan), known])
        first = LOOKBACK + len(self._rates)  # where this piece's rates begin in ``padded``
        back = np.full(len(pos), -np.inf)
        for lag in range(1, LOOKBACK + 1):  # the largest of the LOOKBACK rates before each
            back = np.fmax(back, padded[first - lag:first - lag + len(pos)])
        jump = (np.abs(change) >= LOG_JUMP) & (back > -np.inf) & (rate >= SUDDEN * back)
        for k in np.flatnonzero(jump).tolist():
            starts.setdefault(a + int(pos[k]), "jump")
        if len(pos):
            self._prev_lr, self._prev_step = float(v[-1]), int(steps[pos[-1]])
            self._rates = [x for x in known[-LOOKBACK:].tolist() if x == x]
        out = sorted(starts.items())
        rising = change > np.log1p(RISE)
        at = pos + a
        edges = [a] + [i for i, _ in out] + [b]
        found = list(out)
        for n, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            if lo == hi:
                continue
            if n:  # a phase starts at lo: its first change after lo says whether it warms up
                self._fresh, self._warm = True, False
            inside = np.flatnonzero((at > lo) & (at < hi) & (change == change)) if n else \
                np.flatnonzero((at >= lo) & (at < hi) & (change == change))
            if not len(inside):
                continue
            if self._fresh:
                self._fresh, self._warm = False, bool(rising[inside[0]])
                if self._warm:
                    found.append((int(at[inside[0]]), "warmup"))
            if self._warm:
                ends = inside[~rising[inside]]
                if len(ends):
                    found.append((int(at[ends[0]]), "warmup_end"))
                    self._warm = False
        return sorted(found)

    def _action_starts(self, steps: np.ndarray, a: int) -> set[int]:
        """Logged indices (of this piece) that start a phase for an applied action."""
        found = set()
        while self._actions and len(steps) and self._actions[0] <= steps[-1]:
            first = int(np.searchsorted(steps, self._actions.pop(0), side="left"))
            found.add(a + first)
        return found


__all__ = ["JUMP", "PhaseScan"]
