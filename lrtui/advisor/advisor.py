"""The advisor: events of one run in, its state and recommendations out — one event at a time or in bulk.

``Advisor.update`` takes one event as the follower gives it (amortized O(1)); ``Advisor.update_data``
takes a whole ``RunData`` as numpy columns and reaches the same state (the vectorized path for
replay and ``advise`` on long runs). Both feed the same handlers, so a rule lives in one place:
thresholds in ``threshold.py``, divergence in ``divergence.py``, regimes in ``regime.py``, the
advice itself in ``recommend.py``.
"""

from __future__ import annotations

import bisect
import math
from array import array
from typing import Any, Iterable

import numpy as np

from lrtui.advisor import recommend
from lrtui.advisor.divergence import (
    BulkDivergence,
    Divergence,
    DivergenceDetector,
    Excursion,
    detect_divergence,
)
from lrtui.advisor.regime import (
    CONVERGED_LOSS,
    MIN_SEGMENT,
    SEGMENT_TOLERANCE,
    RegimeConfirmation,
    WindowVerdict,
    judge_window,
    next_check,
)
from lrtui.advisor.state import AdvisorState, Alert, Recommendation, Segment
from lrtui.advisor.threshold import (
    edge_state,
    max_stable_lr,
    sharpness_method,
    stability_threshold,
    threshold_constant,
    threshold_from,
)
from lrtui.runlog.reader import float_column

#: Metric fields that hold a loss over the whole training set (the paper's convergence test).
FULL_TRAIN_LOSS_FIELDS = ("full_train_loss", "train_loss_full")
#: Metric phases that evaluate an averaged copy of the model (SWA/EMA), not the trained weights.
AVERAGED_PHASES = ("swa", "ema", "averaged")
#: Catapults alerted one by one; later ones are only counted (``AdvisorState.catapults``).
CATAPULT_ALERTS = 3
#: Most alerts kept (oldest dropped); recommendations are few by construction.
MAX_ALERTS = 200

#: Finite losses are clipped to ±this before any sum: a loss of 1e300 is a divergence all the
#: same, and the sums and squares of the regime test stay finite.
LOSS_CAP = 1e100

_isfinite = math.isfinite


class _Seg:
    """Book-keeping of one constant-LR segment (the public view is ``Segment``)."""

    __slots__ = ("index", "start", "stop", "start_step", "lr", "lr_above", "lr_below", "confirm",
                 "next_check", "verdict", "converged_by", "advised", "edge_alerts", "diverged")

    def __init__(self, index: int, start: int, start_step: int, lr: float) -> None:
        self.index = index
        self.start = start
        self.stop = start
        self.start_step = start_step
        self.set_lr(lr)
        self.confirm = RegimeConfirmation()
        self.next_check = MIN_SEGMENT
        self.verdict: WindowVerdict | None = None
        self.converged_by: str | None = None
        self.advised: set[str] = set()
        self.edge_alerts: set[str] = set()
        self.diverged = False

    def set_lr(self, lr: float) -> None:
        """The segment's LR and the bounds outside which a new segment starts (``out_of_segment``)."""
        self.lr = lr
        self.lr_above = lr * (1.0 + SEGMENT_TOLERANCE)
        self.lr_below = lr / (1.0 + SEGMENT_TOLERANCE)

    def regime(self) -> str:
        if self.diverged:
            return "diverged"
        if self.converged_by == "full_train_loss":
            return "converging"
        return self.confirm.confirmed


#: The fields of ``step`` events the advisor reads (``load_run(path, step_fields=...)`` may skip
#: the rest).
STEP_FIELDS_READ = ("step", "loss", "grad_norm", "lr")


class Advisor:
    """Follows one run and says what its learning rate is doing.

    Example:
        >>> adv = Advisor(run.meta)                          # doctest: +SKIP
        >>> adv.update_many(batch.events)                    # doctest: +SKIP
        >>> adv.state().regime                               # doctest: +SKIP
        'equilibrium'

    Args:
        meta: the run's ``meta.json`` (its ``optimizer`` gives the stability threshold).
        convergence_threshold_lr: the largest LR that converges, when a sweep has measured it; then
            ``drop_lr`` goes at least down to it and ``raise_lr``/``lower_lr`` aim at the band
            above it. It may be set later (a live sweep learns it): advice from then on uses it.
    """

    def __init__(self, meta: dict[str, Any] | None, *, convergence_threshold_lr: float | None = None) -> None:
        self.meta = meta if isinstance(meta, dict) else {}
        opt = self.meta.get("optimizer")
        self.optimizer_meta: dict[str, Any] | None = opt if isinstance(opt, dict) else None
        self.convergence_threshold_lr = convergence_threshold_lr
        self._methods = sharpness_method(self.optimizer_meta)
        self._threshold_constant = threshold_constant(self.optimizer_meta)  # per sharpness event: found once
        self._steps = array("q")
        self._lr0 = array("d")
        self._P = array("d", [0.0])
        # prefix sums of log(loss), and the count of non-positive losses (no log; the regime test
        # then falls back to the arithmetic means of P)
        self._L = array("d", [0.0])
        self._Z = array("q", [0])
        self._G: array | None = None
        self._last_x = 0.0
        self._first_x: float | None = None  # the first finite logged loss: the untrained model's
        self._last_lg = 0.0
        self._lrs: list[float] = []
        self._lrs_raw: Any = None
        self._segs: list[_Seg] = []
        self._seg_starts: list[int] = []
        self._det = DivergenceDetector(self._P, None)
        self._divergence: Divergence | None = None
        self._alerts: list[Alert] = []
        self._recs: list[Recommendation] = []
        self._sharp: dict[str, tuple[float, int | None]] = {}
        self._raised = False
        self.catapults = 0
        self.metric_events: list[dict[str, Any]] = []
        self.ended = False
        self.end_status: str | None = None
        self.events_seen = 0
        self._waiting: list[tuple[int, int, int, dict[str, Any]]] = []

    # -- feeding -------------------------------------------------------------------------

    def update(self, event: dict[str, Any]) -> None:
        """Take one event (non-finite floats as float nan/inf, as the follower gives them).

        A sharpness or metric event belongs after the last step event at or before its step. The
        probe writes step events in batches, so such events often arrive *before* their step's
        event: they wait until a later step (or the end record) arrives, which is also where the
        bulk path puts them. One that arrives after later steps is taken at once.
        """
        self.events_seen += 1
        kind = event.get("kind")
        if kind == "step":
            step = event.get("step")
            if step.__class__ is not int or not -_STEP_MAX <= step <= _STEP_MAX:
                return
            if self._waiting and self._waiting[0][0] < step:
                self._release(step)
            lr = event.get("lr")
            if lr.__class__ is not list:
                lr = [lr] if isinstance(lr, (int, float)) else []
            grad = event.get("grad_norm", _MISSING)
            self._on_step(step, _float(event.get("loss")), grad, lr)
        elif kind == "sharpness" or kind == "metric":
            step = event.get("step")
            if step.__class__ is int and (not self._steps or step >= self._steps[-1]):
                self._waiting.append((step, 0 if kind == "sharpness" else 1, self.events_seen, event))
                self._waiting.sort(key=_wait_key)
            else:
                i = bisect.bisect_right(self._steps, step) - 1 if step.__class__ is int else len(self._steps) - 1
                self._side(event, i)
        elif kind == "end":
            self._release(None)
            self.ended = True
            self.end_status = event.get("status") if isinstance(event.get("status"), str) else None

    def flush(self) -> None:
        """Take the side events still waiting for a later step: call it when a run is complete but
        has no end record (a crashed run, or a list of events)."""
        self._release(None)

    def _release(self, before: int | None) -> None:
        """Take the waiting side events with a step below ``before`` (all when None), in the bulk
        path's order: by step position, sharpness before metrics, then arrival."""
        i = len(self._steps) - 1
        keep = []
        ready = []
        for item in self._waiting:
            (ready if before is None or item[0] < before else keep).append(item)
        self._waiting = keep
        ready.sort(key=lambda t: (t[1], t[2]))
        for _, _, _, event in ready:
            self._side(event, i)

    def _side(self, event: dict[str, Any], i: int) -> None:
        if event.get("kind") == "sharpness":
            value = event.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._on_sharpness(event.get("method"), _float(value), event.get("step"), i)
        else:
            self._on_metric(event, i)

    def update_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Take events in file order."""
        for e in events:
            self.update(e)

    def _on_step(self, step: int, loss: float, grad: Any, lrs: list[Any]) -> None:
        # the hot path (every logged step): plain attribute and float work only
        i = len(self._steps)
        if lrs != self._lrs_raw:
            self._lrs_raw = lrs
            self._lrs = [_float(v) for v in lrs]
        lr0 = self._lrs[0] if self._lrs else math.nan
        segs = self._segs
        if not segs:
            self._new_segment(i, step, lr0)
        elif lr0 == lr0:
            seg = segs[-1]
            if seg.lr != seg.lr:
                seg.set_lr(lr0)
            elif lr0 > seg.lr_above or lr0 < seg.lr_below:  # regime.out_of_segment, inlined
                self._new_segment(i, step, lr0)
        seg = segs[-1]
        self._steps.append(step)
        self._lr0.append(lr0)
        bad = None
        if _isfinite(loss):
            if not -LOSS_CAP <= loss <= LOSS_CAP:
                loss = LOSS_CAP if loss > 0 else -LOSS_CAP
            self._last_x = loss
            if self._first_x is None:
                self._first_x = loss
        else:
            bad = "non-finite loss"
        x = self._last_x
        P = self._P
        P.append(P[-1] + x)
        if x > 0.0:
            self._L.append(self._L[-1] + math.log(x))
            self._Z.append(self._Z[-1])
        else:
            self._L.append(self._L[-1])
            self._Z.append(self._Z[-1] + 1)
        if grad is not _MISSING:
            if self._G is None and i == 0:
                self._G = array("d", [0.0])
                self._det.G = self._G
            g = grad if grad.__class__ is float else _float(grad)
            if _isfinite(g):
                if g > 0:
                    self._last_lg = math.log(g)
            elif bad is None:
                bad = "non-finite gradient norm"
        G = self._G
        if G is not None:
            G.append(G[-1] + self._last_lg)
        seg.stop = i + 1
        if self._divergence is None:
            found = self._det.step(i, bad)
            if found is not None:
                if found.__class__ is Divergence:
                    self._on_divergence(found)
                else:
                    self._on_excursion(found)
            if self._divergence is None and seg.stop - seg.start == seg.next_check:
                self._check(seg, i)

    def _new_segment(self, i: int, step: int, lr: float) -> None:
        seg = _Seg(len(self._segs), i, step, lr)
        if self._divergence is not None:
            seg.diverged = True
        self._segs.append(seg)
        self._seg_starts.append(i)

    # -- the decisions (shared by both paths) ---------------------------------------------

    def _seg_at(self, i: int) -> _Seg | None:
        if not self._segs:
            return None
        k = bisect.bisect_right(self._seg_starts, i) - 1
        return self._segs[max(k, 0)]

    def _alert(self, severity: str, step: int | None, message: str) -> None:
        self._alerts.append(Alert(severity, step, message))
        if len(self._alerts) > MAX_ALERTS:
            del self._alerts[: len(self._alerts) - MAX_ALERTS]

    def _on_excursion(self, exc: Excursion) -> None:
        self.catapults += 1
        if self.catapults > CATAPULT_ALERTS:
            return
        s, e = self._steps[exc.start], self._steps[exc.stop] if exc.stop is not None else None
        what = "loss" if exc.loss else "gradient norm"
        self._alert("info", e, f"catapult: the {what} spiked at step {s} (smoothed loss up to "
                               f"{exc.peak:.3g}x its best) and recovered by step {e}; not a divergence")

    def _on_divergence(self, div: Divergence) -> None:
        self._divergence = div
        steps = self._steps
        began, flagged = steps[div.began], steps[div.flagged]
        for seg in self._segs:
            if seg.stop > div.began:
                seg.diverged = True
        lr = self._lr0[div.began]
        if not lr == lr:
            lr = self._lr0[div.flagged]
        self._alert("error", flagged, f"diverged: {div.reason} from step {began} (detected at step {flagged})")
        from_index = max(div.began - 10, 0)
        to_step = max(min(steps[from_index], began - recommend.ROLLBACK_STEPS), steps[0])
        self._recs.append(recommend.lower_lr_diverged(flagged, lr, began, div.reason))
        self._recs.append(recommend.rollback_diverged(flagged, began, to_step))

    def _check(self, seg: _Seg, i: int) -> None:
        length = i + 1 - seg.start
        positive = self._Z[i + 1] == self._Z[seg.start]
        v = judge_window(self._P, seg.start, i + 1, self._chance_reference(), self._L if positive else None,
                         self._steps)
        seg.verdict = v
        seg.next_check = next_check(length)
        if v.reached and seg.converged_by is None:
            seg.converged_by = "train_loss"
            self._maybe_raise(seg, self._steps[i], v.means_last)
        if not seg.confirm.feed(v):
            return
        regime = seg.confirm.confirmed
        step = self._steps[i]
        window = (self._steps[v.start], self._steps[v.stop - 1])
        self._alert("info", step, f"regime {regime} at lr {seg.lr:.3g} since step {seg.start_step} "
                                  f"(loss level {v.level:.3g}, change {v.lo:+.1%}..{v.hi:+.1%} over steps "
                                  f"{window[0]}-{window[1]})")
        if regime == "equilibrium" and "equilibrium" not in seg.advised:
            seg.advised.add("equilibrium")
            self._recs.append(recommend.drop_lr(step, seg.lr, v.level, window, (v.lo, v.hi),
                                                self.convergence_threshold_lr))
            self._recs.append(recommend.start_averaging(step, seg.start_step, v.level))
        elif regime == "chance" and "chance" not in seg.advised:
            seg.advised.add("chance")
            initial = self._chance_reference()
            initial = initial if initial is not None else v.level
            self._recs.append(recommend.lower_lr_chance(step, seg.lr, v.level, initial,
                                                        self.convergence_threshold_lr))
            self._recs.append(recommend.rollback_chance(step, seg.start_step))

    def _chance_reference(self) -> float | None:
        """The loss of the untrained model: the first logged loss, or the mean of the first few
        when lower (a large LR may lift the loss within the first logged steps)."""
        first, early = self._first_x, self._det.initial
        if first is None or early is None:
            return early if first is None else first
        return min(first, early)

    def _maybe_raise(self, seg: _Seg, step: int, level: float) -> None:
        if seg.index == 0 and not self._raised:
            self._raised = True
            self._recs.append(recommend.raise_lr(step, seg.lr, level, self.convergence_threshold_lr))

    def _on_sharpness(self, method: Any, value: float, step: Any, i: int) -> None:
        if method not in self._methods:
            return
        step = step if step.__class__ is int else None
        self._sharp[method] = (value, step)
        if i < 0 or self._divergence is not None:
            return
        chosen = self._chosen_sharpness()
        if chosen is None or chosen[0] != method:
            return
        lr = self._lr0[i]
        threshold = threshold_from(self._threshold_constant, lr)
        if threshold is None or not (threshold == threshold) or threshold <= 0:
            return
        ratio = value / threshold
        edge = edge_state(ratio)
        seg = self._seg_at(i)
        if seg is None or edge not in ("at_edge", "above") or edge in seg.edge_alerts:
            return
        seg.edge_alerts.add(edge)
        best_lr = max_stable_lr(self.optimizer_meta, value)
        if edge == "above":
            self._alert("warning", step, f"sharpness {value:.4g} ({method}) is {ratio:.2f}x the stability "
                                         f"threshold {threshold:.4g} at lr {lr:.3g}: above the edge of stability, "
                                         f"expect a catapult or divergence (largest stable lr {best_lr:.3g})")
        else:
            self._alert("info", step, f"sharpness {value:.4g} ({method}) reached the stability threshold "
                                      f"{threshold:.4g} at lr {lr:.3g} (ratio {ratio:.2f}): at the edge of stability")

    def _on_metric(self, event: dict[str, Any], i: int) -> None:
        self.metric_events.append(event)
        if self._divergence is not None or i < 0:
            return
        if event.get("phase") in AVERAGED_PHASES:  # the averaged model's loss is not the run's
            return
        full = None
        for name in FULL_TRAIN_LOSS_FIELDS:
            v = event.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                full = float(v)
                break
        if full is None or not full < CONVERGED_LOSS:
            return
        step = event.get("step")
        step = step if step.__class__ is int else self._steps[i]
        seg = self._seg_at(i)
        if seg is None or seg.converged_by == "full_train_loss":
            return
        seg.converged_by = "full_train_loss"
        self._alert("info", step, f"full-train loss {full:.3g} < {CONVERGED_LOSS:g} at lr {seg.lr:.3g}: converged")
        self._maybe_raise(seg, step, full)

    # -- bulk ----------------------------------------------------------------------------

    def update_data(self, data: Any) -> Advisor:
        """Take a whole run's ``RunData`` at once (vectorized); only on a fresh advisor.

        Reaches the same state as feeding its events one by one in file order (given the usual
        order: each step's event before the sharpness and metric events of that step). After it,
        ``update`` carries on with new events.
        """
        if self._steps or self.events_seen:
            raise ValueError("update_data needs a fresh Advisor")
        self.events_seen = len(data)
        tab = data.table("step")
        if tab and "step" in tab:
            # a step event without an integer step is skipped, as ``update`` skips it
            raw = float_column(tab["step"])
            keep = np.isfinite(raw) & (raw == np.round(raw)) & (np.abs(raw) <= _STEP_MAX)
            if not keep.all():
                tab = {k: v[keep] for k, v in tab.items()}
        n = len(tab["step"]) if tab and "step" in tab else 0
        found, starts = self._bulk_steps(tab, n) if n else (None, [])
        i_last = len(self._steps) - 1
        # the index of the last step event at or before each side event's step (one vectorized call)
        steps_f = np.frombuffer(self._steps, dtype=np.int64).astype(np.float64) if len(self._steps) else np.zeros(0)
        side: list[tuple[int, int, int, Any]] = []
        sharp = data.table("sharpness")
        if sharp and "value" in sharp and "method" in sharp:
            sv, sm_ = sharp["value"], sharp["method"]
            ss = sharp["step"] if "step" in sharp else np.full(len(sv), np.nan)
            ss, sv = _floats(np.asarray(ss)), _floats(np.asarray(sv))
            where = np.searchsorted(steps_f, ss, side="right") - 1
            for k in range(len(sv)):
                known = ss[k] == ss[k]
                side.append((int(where[k]) if known else i_last, 2, len(side),
                             ("sharpness", sm_[k], float(sv[k]), int(ss[k]) if known else None)))
        metrics = data.records.get("metric", [])
        msteps = np.array([r.get("step") if _int_step(r.get("step")) else np.nan for r in metrics],
                          dtype=np.float64)
        mwhere = np.searchsorted(steps_f, msteps, side="right") - 1
        for k, rec in enumerate(metrics):
            idx = int(mwhere[k]) if msteps[k] == msteps[k] else i_last
            side.append((idx, 2, len(side), ("metric", rec)))
        side.sort(key=lambda t: (t[0], t[2]))
        self._bulk_replay(side, found, starts)
        ends = data.records.get("end", [])
        if ends:
            self.ended = True
            st = ends[-1].get("status")
            self.end_status = st if isinstance(st, str) else None
        return self

    def _bulk_steps(self, tab: dict[str, np.ndarray], n: int) -> tuple[BulkDivergence, list[int]]:
        """Fill the step arrays from columns; returns the divergence scan and the segment starts."""
        steps = float_column(tab["step"]).astype(np.int64)
        loss = _floats(tab["loss"]) if "loss" in tab else np.full(n, np.nan)
        grad = _floats(tab["grad_norm"]) if "grad_norm" in tab else None
        lr_col = tab.get("lr")
        if lr_col is None or lr_col.dtype == object or (lr_col.ndim == 2 and lr_col.shape[1] == 0):
            lr0 = np.full(n, np.nan)
        elif lr_col.ndim == 2:
            lr0 = lr_col[:, 0].astype(np.float64)
            self._lrs = [float(v) for v in lr_col[-1]]
        else:
            lr0 = lr_col.astype(np.float64)
            self._lrs = [float(lr0[-1])]
        ar = np.arange(n)
        ok = np.isfinite(loss)
        loss = np.clip(loss, -LOSS_CAP, LOSS_CAP)
        last = np.maximum.accumulate(np.where(ok, ar, -1))
        x = np.where(last >= 0, loss[np.maximum(last, 0)], 0.0)
        P = np.concatenate([[0.0], np.cumsum(x)])
        if ok.any():
            self._first_x = float(loss[int(np.argmax(ok))])
        pos = x > 0.0
        L = np.concatenate([[0.0], np.cumsum(np.log(np.where(pos, x, 1.0)))])
        Z = np.concatenate([[0], np.cumsum(~pos)]).astype(np.int64)
        bad_loss = ~ok
        G = None
        bad_grad = np.zeros(n, dtype=bool)
        if grad is not None:
            gok = np.isfinite(grad)
            bad_grad = ~gok
            pos = gok & (grad > 0)
            lastg = np.maximum.accumulate(np.where(pos, ar, -1))
            with np.errstate(divide="ignore", invalid="ignore"):
                lg = np.where(lastg >= 0, np.log(np.where(pos, grad, 1.0))[np.maximum(lastg, 0)], 0.0)
            G = np.concatenate([[0.0], np.cumsum(lg)])
            self._last_lg = float(lg[-1])
        bad_any = bad_loss | bad_grad
        non_finite = None
        if bad_any.any():
            f = int(np.argmax(bad_any))
            non_finite = (f, "non-finite loss" if bad_loss[f] else "non-finite gradient norm")
        found = detect_divergence(P, G, non_finite)
        # the same arrays the incremental path keeps, so both paths read identical numbers
        self._steps.frombytes(_bytes_of(steps))
        self._lr0.frombytes(_bytes_of(lr0))
        self._P.frombytes(_bytes_of(P[1:]))
        self._L.frombytes(_bytes_of(L[1:]))
        self._Z.frombytes(_bytes_of(Z[1:]))
        self._last_x = float(x[-1])
        if G is not None:
            self._G = array("d")
            self._G.frombytes(_bytes_of(G))
            self._det.G = self._G
        self._det.resume(found)
        # segments
        starts = [0]
        a = 0
        while True:
            fin = np.flatnonzero(np.isfinite(lr0[a:]))
            if not len(fin):
                break
            first = a + int(fin[0])
            seg_lr = float(lr0[first])
            rest = lr0[first + 1:]
            mask = np.isfinite(rest) & ((rest > seg_lr * (1.0 + SEGMENT_TOLERANCE))
                                        | (rest < seg_lr / (1.0 + SEGMENT_TOLERANCE)))
            if not mask.any():
                break
            a = first + 1 + int(np.argmax(mask))
            starts.append(a)
        return found, starts

    def _bulk_replay(self, side: list[tuple[int, int, int, Any]], found: BulkDivergence | None,
                     starts: list[int]) -> None:
        """Run the shared handlers in the order the incremental path would: segments, divergence
        and catapults, regime checks, then side events, by logged-step index."""
        n = len(self._steps)
        timeline: list[tuple[int, int, int, Any]] = list(side)
        if n:
            assert found is not None
            flag = found.divergence.flagged if found.divergence is not None else n
            for k, a in enumerate(starts):
                stop = starts[k + 1] if k + 1 < len(starts) else n
                # the segment's LR is its first finite one, as the incremental path learns it
                lrs = self._lr0
                first_finite = next((lrs[j] for j in range(a, min(stop, a + 1000)) if lrs[j] == lrs[j]), lrs[a])
                timeline.append((a, -1, k, ("segment", a, stop, first_finite)))
                m = MIN_SEGMENT
                while a + m - 1 < min(stop, flag):
                    timeline.append((a + m - 1, 1, 0, ("check", k)))
                    m = next_check(m)
            for exc in found.catapults:
                timeline.append((exc.stop, 0, 0, ("excursion", exc)))
            if found.divergence is not None:
                timeline.append((found.divergence.flagged, 0, 1, ("divergence", found.divergence)))
        timeline.sort(key=lambda t: (t[0], t[1], t[2]))
        for i, _phase, _seq, item in timeline:
            what = item[0]
            if what == "segment":
                _, a, stop, lr = item
                self._new_segment(a, self._steps[a], lr)
                self._segs[-1].stop = stop
            elif what == "check":
                self._check(self._segs[item[1]], i)
            elif what == "excursion":
                self._on_excursion(item[1])
            elif what == "divergence":
                self._on_divergence(item[1])
            elif what == "sharpness":
                self._on_sharpness(item[1], item[2], item[3], i)
            elif what == "metric":
                self._on_metric(item[1], i)
        if n:
            for seg in self._segs:  # the next test of each segment, for carrying on incrementally
                m = MIN_SEGMENT
                while m <= seg.stop - seg.start:
                    m = next_check(m)
                seg.next_check = m

    @classmethod
    def from_run(cls, run: Any, **kwargs: Any) -> Advisor:
        """An advisor that has read a loaded ``Run`` (``lrtui.runlog.load_run``) in bulk."""
        return cls(run.meta, **kwargs).update_data(run.data)

    # -- the answer ----------------------------------------------------------------------

    def _chosen_sharpness(self) -> tuple[str, float, int | None] | None:
        for method in self._methods:
            if method in self._sharp:
                value, step = self._sharp[method]
                return method, value, step
        return None

    def state(self) -> AdvisorState:
        """The verdict now (cheap: O(segments + alerts))."""
        st = AdvisorState()
        st.optimizer = self.optimizer_meta.get("class") if self.optimizer_meta else None
        st.convergence_threshold_lr = self.convergence_threshold_lr
        st.logged_steps = len(self._steps)
        st.catapults = self.catapults
        st.ended, st.end_status = self.ended, self.end_status
        if self._steps:
            st.step = self._steps[-1]
            lr = self._lr0[-1]
            st.lr = lr if lr == lr else None
            st.lrs = list(self._lrs)
        chosen = self._chosen_sharpness()
        if chosen is not None:
            st.sharpness_method, st.sharpness, st.sharpness_step = chosen
            st.max_stable_lr = max_stable_lr(self.optimizer_meta, st.sharpness)
            if st.lr is not None:
                threshold = stability_threshold(self.optimizer_meta, st.lr)
                if threshold is not None and threshold == threshold and threshold > 0:
                    st.sharpness_threshold = float(threshold)
                    st.stability_ratio = st.sharpness / st.sharpness_threshold
                    st.edge = edge_state(st.stability_ratio)
        elif st.lr is not None:
            threshold = stability_threshold(self.optimizer_meta, st.lr)
            if threshold is not None and threshold == threshold:
                st.sharpness_threshold = float(threshold)
        if self._divergence is not None:
            st.regime = "diverged"
            st.diverged_at_step = self._steps[self._divergence.began]
            st.divergence_flagged_at_step = self._steps[self._divergence.flagged]
            st.divergence_reason = self._divergence.reason
        elif self._segs:
            st.regime = self._segs[-1].regime()
        if self._segs and self._segs[-1].verdict is not None:
            st.loss_level = self._segs[-1].verdict.level
        st.alerts = list(self._alerts)
        st.recommendations = list(self._recs)
        st.segments = [self._segment_view(s) for s in self._segs]
        return st

    def _segment_view(self, seg: _Seg) -> Segment:
        v = seg.verdict
        last = seg.stop - 1
        out = Segment(seg.start_step, self._steps[last] if last >= seg.start else seg.start_step, seg.lr,
                      seg.regime(), seg.stop - seg.start, converged_by=seg.converged_by)
        if v is not None:
            out.loss_level, out.relative_change = v.level, v.change
            out.change_interval = (v.lo, v.hi)
            out.window = (self._steps[v.start], self._steps[v.stop - 1])
        return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _wait_key(item: tuple[int, int, int, Any]) -> tuple[int, int, int]:
    return item[0], item[1], item[2]


#: Largest step the advisor takes: every integer up to it is exact in the float64 step columns.
_STEP_MAX = 2**53


def _int_step(value: Any) -> bool:
    """A step the advisor takes: a JSON integer of at most ``_STEP_MAX`` in magnitude."""
    return value.__class__ is int and -_STEP_MAX <= value <= _STEP_MAX


def _float(value: Any) -> float:
    if value.__class__ is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range: as infinite as a float gets
            return math.inf if value > 0 else -math.inf
    return math.nan


def _floats(column: np.ndarray) -> np.ndarray:
    """A scalar field's column as float64 (a list per event is no scalar: NaN)."""
    return float_column(column) if column.ndim == 1 else np.full(len(column), np.nan)


def _bytes_of(column: np.ndarray) -> memoryview:
    """A 1-D array's memory as bytes, without a copy (what ``array.frombytes`` takes)."""
    return memoryview(np.ascontiguousarray(column)).cast("B")


__all__ = ["Advisor"]
