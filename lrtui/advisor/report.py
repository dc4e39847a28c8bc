"""The advisor's book-keeping per phase, and the answer it gives: an ``AdvisorState`` built from it.

``advisor.py`` judges (feeds the scans, runs the checks, files the advice); this module only
keeps a phase's running facts (``PhaseBook``) and turns the advisor's facts into the public view
(``advisor_state``, ``segment_view``): no rule lives here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lrtui.advisor.regime import MIN_SEGMENT, RegimeConfirmation, WindowVerdict
from lrtui.advisor.series import StepSeries
from lrtui.advisor.state import AdvisorState, Segment
from lrtui.advisor.threshold import edge_state, max_stable_lr, stability_threshold

if TYPE_CHECKING:
    from lrtui.advisor.advisor import Advisor


class PhaseBook:
    """Book-keeping of one phase (the public view is ``Segment``)."""

    __slots__ = ("index", "start", "stop", "cause", "judge_from", "confirm", "next_m", "verdict", "converged_by",
                 "edge_alerts", "diverged", "warm", "_peak", "_peak_upto")

    def __init__(self, index: int, start: int, cause: str, diverged: bool) -> None:
        self.index, self.start, self.stop, self.cause = index, start, start, cause
        self.judge_from: int | None = start  # None while in warm-up
        self.confirm = RegimeConfirmation()
        self.next_m = MIN_SEGMENT
        self.verdict: WindowVerdict | None = None
        self.converged_by: str | None = None
        self.edge_alerts: set[str] = set()
        self.diverged = diverged
        self.warm = False
        self._peak: float | None = None
        self._peak_upto = start

    def peak_lr(self, s: StepSeries, stop: int) -> float | None:
        """The largest finite LR (group 0) over its logged steps before ``stop``, or None
        (amortized O(1): each step is looked at once)."""
        stop = min(stop, len(s))
        if stop > self._peak_upto:
            lrs = s.lr.a[self._peak_upto:stop]
            finite = lrs[np.isfinite(lrs)]
            if finite.size:
                top = float(finite.max())
                self._peak = top if self._peak is None else max(self._peak, top)
            self._peak_upto = stop
        return self._peak

    def regime(self) -> str:
        if self.diverged:
            return "diverged"
        if self.converged_by == "full_train_loss":
            return "converging"
        return self.confirm.confirmed


def _lr_at(s: StepSeries, i: int) -> float:
    return float(s.lr.a[i]) if 0 <= i < len(s) else math.nan


def advisor_state(adv: Advisor) -> AdvisorState:
    """The state of an advisor that has judged everything it was given (O(phases + alerts))."""
    s = adv.series
    st = AdvisorState()
    st.optimizer = adv.optimizer_meta.get("class") if adv.optimizer_meta else None
    st.convergence_threshold_lr = adv.convergence_threshold_lr
    st.logged_steps = len(s)
    st.catapults = adv.catapults
    st.ended, st.end_status = adv.ended, adv.end_status
    if len(s):
        st.step = int(s.step.a[-1])
        lr = _lr_at(s, len(s) - 1)
        st.lr = lr if lr == lr else None
        st.lrs = list(s.last_lrs)
    method, value, step = adv.chosen_sharpness()
    threshold = stability_threshold(adv.optimizer_meta, st.lr) if st.lr is not None else None
    if threshold is not None and threshold == threshold and threshold > 0:
        st.sharpness_threshold = float(threshold)
    if method is not None:
        st.sharpness_method, st.sharpness, st.sharpness_step = method, value, step
        st.max_stable_lr = max_stable_lr(adv.optimizer_meta, value)
        if st.sharpness_threshold is not None:
            st.stability_ratio = value / st.sharpness_threshold
            st.edge = edge_state(st.stability_ratio)
    if adv.divergence is not None:
        st.regime = "diverged"
        st.diverged_at_step = int(s.step.a[adv.divergence.began])
        st.divergence_flagged_at_step = int(s.step.a[adv.divergence.flagged])
        st.divergence_reason = adv.divergence.reason
    elif adv.phases:
        st.regime = adv.phases[-1].regime()
    if adv.phases:
        last = adv.phases[-1]
        st.in_warmup = last.judge_from is None and not last.diverged
        if last.verdict is not None:
            st.loss_level = last.verdict.level
    if st.in_warmup and st.max_stable_lr is not None and st.lr:
        st.warmup_headroom = st.max_stable_lr / st.lr
    st.alerts = list(adv.alerts)
    st.recommendations = adv.ledger.recommendations()
    st.withdrawn = list(adv.ledger.withdrawn)
    st.done = list(adv.ledger.done)
    st.segments = [segment_view(s, ph) for ph in adv.phases]
    return st


def segment_view(s: StepSeries, ph: PhaseBook) -> Segment:
    """The public view of one phase."""
    steps = s.step.a
    last = max(ph.stop - 1, ph.start)
    out = Segment(int(steps[ph.start]), int(steps[last]), _lr_at(s, ph.start), ph.regime(), ph.stop - ph.start,
                  converged_by=ph.converged_by, lr_end=_lr_at(s, last), cause=ph.cause,
                  peak_lr=ph.peak_lr(s, last + 1))
    if ph.warm and ph.judge_from is not None:
        out.warmup_end_step = int(steps[ph.judge_from])
    v = ph.verdict
    if v is not None:
        out.loss_level, out.relative_change, out.lr_change = v.level, v.change, v.lr_change
        out.change_interval = (v.lo, v.hi)
        out.window = (int(steps[v.start]), int(steps[v.stop - 1]))
    return out


__all__ = ["PhaseBook", "advisor_state", "segment_view"]
