"""The advisor: events of one run in, its state and recommendations out — one event at a time or in bulk.

Both ways are one path. ``Advisor.update`` only queues an event; ``Advisor.update_data`` takes a
whole ``RunData``'s columns. Either way the steps become columns of one ``StepSeries`` and are
judged, when the state is asked for (or every ``CHUNK`` steps), by the same scans over the steps
not judged yet: phases (``phases.py``), divergence (``divergence.py``), catapults
(``spikes.py``), then the regime checks (``regime.py``) and the side events, handled in step
order. So a rule has one home, and the state does not depend on how the events were cut up.
``report.py`` keeps each phase's facts and builds the ``AdvisorState`` from them.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Iterable

from lrtui.advisor import recommend
from lrtui.advisor.accuracy import AVERAGED_PHASES, AccuracyLog
from lrtui.advisor.divergence import Divergence, DivergenceScan
from lrtui.advisor.ledger import Ledger
from lrtui.advisor.phases import PhaseScan
from lrtui.advisor.regime import CONVERGED_LOSS, WindowVerdict, judge_window, next_check
from lrtui.advisor.report import PhaseBook, advisor_state
from lrtui.advisor.series import StepSeries
from lrtui.advisor.sides import SideEvents, bulk_columns, rows_to_columns, step_row
from lrtui.advisor.spikes import Catapult, SpikeScan
from lrtui.advisor.state import AdvisorState, Alert
from lrtui.advisor.threshold import (
    edge_state,
    max_stable_lr,
    sharpness_method,
    threshold_constant,
    threshold_from,
)

#: Metric fields that hold a loss over the whole training set (the paper's convergence test).
FULL_TRAIN_LOSS_FIELDS = ("full_train_loss", "train_loss_full")
#: Catapults alerted one by one; later ones are only counted (``AdvisorState.catapults``).
CATAPULT_ALERTS = 3
#: Most alerts kept (oldest dropped); recommendations are few by construction.
MAX_ALERTS = 200
#: Queued step events judged at once at the latest (the state is judged whenever it is asked for).
CHUNK = 4096
#: The fields of ``step`` events the advisor reads (``load_run(path, step_fields=...)``).
STEP_FIELDS_READ = ("step", "loss", "grad_norm", "lr")


class Advisor:
    """Follows one run and says what its learning rate is doing.

    Example:
        >>> adv = Advisor(run.meta)                          # doctest: +SKIP
        >>> adv.update_many(batch.events)                    # doctest: +SKIP
        >>> adv.state().regime                               # doctest: +SKIP
        'equilibrium'

    Args:
        meta: the run's ``meta.json`` (its ``optimizer`` gives the stability threshold; its
            ``extra.chance_accuracy`` or ``extra.num_classes``, if given, the chance accuracy).
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
        self._threshold_constant = threshold_constant(self.optimizer_meta)
        self.series = StepSeries()
        self._rows: list[tuple[Any, ...]] = []  # step events queued, as rows
        self._sides = SideEvents()
        self._phase_scan, self._div_scan, self._spike_scan = PhaseScan(), DivergenceScan(), SpikeScan()
        self.phases: list[PhaseBook] = []
        self._phase_starts: list[int] = []
        self.divergence: Divergence | None = None
        self._judged = 0
        self.alerts: list[Alert] = []
        self.ledger = Ledger()
        self._accuracy = AccuracyLog(self.meta)
        self._sharp: dict[str, tuple[float, int | None]] = {}
        self._raised = False
        self.catapults = 0
        self.metric_events: list[dict[str, Any]] = []
        self.ended = False
        self.end_status: str | None = None
        self.events_seen = 0

    # -- feeding -------------------------------------------------------------------------

    def update(self, event: dict[str, Any]) -> None:
        """Take one event (non-finite floats as float nan/inf, as the follower gives them; ``None``
        or an absent field is no value). A sharpness, metric or action event belongs after the
        last step event at or before its step; one that arrives before its step's event waits
        for it (the probe writes step events in batches)."""
        self.events_seen += 1
        kind = event.get("kind")
        if kind == "step":
            row = step_row(event)
            if row is not None:
                self._rows.append(row)
                if len(self._rows) >= CHUNK:
                    self._judge()
        elif kind in ("sharpness", "metric", "action"):
            self._sides.add(event, self._phase_scan)
        elif kind == "end":
            self.ended = True
            self.end_status = event.get("status") if isinstance(event.get("status"), str) else None

    def update_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Take events in file order."""
        for e in events:
            self.update(e)

    def flush(self) -> None:
        """Judge everything taken, also the side events still waiting for a later step: for a run
        that is complete without an end record (a crashed run, or a list of events)."""
        self._judge(final=True)

    def update_data(self, data: Any) -> Advisor:
        """Take a whole run's ``RunData`` at once (vectorized); only on a fresh advisor. Reaches
        the state that feeding its events one by one in file order and ``flush`` reach, and
        ``update`` carries on after it."""
        if len(self.series) or self._rows or self.events_seen:
            raise ValueError("update_data needs a fresh Advisor")
        self.events_seen = len(data)
        for event in self._sides.from_data(data):
            self._sides.add(event, self._phase_scan)
        columns = bulk_columns(data)
        if columns is not None:
            self.series.extend(*columns[:-1])
            self.series.last_lrs = columns[-1]
        ends = data.records.get("end", [])
        if ends:
            self.ended = True
            status = ends[-1].get("status")
            self.end_status = status if isinstance(status, str) else None
        self._judge(final=True)  # the data is complete: side events after its last step go after it
        return self

    @classmethod
    def from_run(cls, run: Any, **kwargs: Any) -> Advisor:
        """An advisor that has read a loaded ``Run`` (``lrtui.runlog.load_run``) in bulk."""
        return cls(run.meta, **kwargs).update_data(run.data)

    # -- judging ---------------------------------------------------------------------------

    def _judge(self, final: bool = False) -> None:
        """Judge the steps queued or added since the last time, and the side events due."""
        if self._rows:
            rows, self._rows = self._rows, []
            self.series.extend(*rows_to_columns(rows))
            self.series.last_lrs = rows[-1][-1]
        final = final or self.ended
        s = self.series
        a, b = self._judged, len(s)
        self._judged = b
        timeline: list[tuple[int, int, int, Any]] = []
        if b > a:
            for i, what in self._phase_scan.scan(s):
                timeline.append((i, -1 if what.startswith("warmup") else -2, 0, (what, i)))
            div = self._div_scan.scan(s)
            flag = div.flagged if div is not None else b
            for c in self._spike_scan.scan(s, until=flag + 1):
                timeline.append((c.stop, 0, 0, ("catapult", c)))
            if div is not None and a <= div.flagged < b:
                timeline.append((div.flagged, 0, 1, ("divergence", div)))
        for i, seq, event in self._sides.due(s.step.a, b, final):
            timeline.append((i, 2, seq, ("side", event)))
        timeline.sort(key=lambda t: (t[0], t[1], t[2]))
        for i, rank, _, item in timeline:
            self._checks_before(i + 1 if rank > 1 else i)  # a step's own check comes before its side events
            what = item[0]
            if what in ("start", "jump", "action"):
                self._on_phase(item[1], what)
            elif what in ("warmup", "warmup_end"):
                self._on_warmup(item[1], what == "warmup")
            elif what == "catapult":
                self._on_catapult(item[1])
            elif what == "divergence":
                self._on_divergence(item[1])
            else:
                self._on_side(item[1], i)
        self._checks_before(b)
        if self.phases:
            self.phases[-1].stop = b

    def _checks_before(self, i: int) -> None:
        """Run the regime checks of the phase going on that fall at logged steps before i."""
        if not self.phases:
            return
        ph = self.phases[-1]
        s = self.series
        while ph.judge_from is not None and self.divergence is None:
            j = s.usable_before(ph.judge_from) + ph.next_m - 1
            if j >= len(s.loss_at) or int(s.loss_at.a[j]) >= i:
                return
            ph.next_m = next_check(ph.next_m)
            self._check(ph, int(s.loss_at.a[j]))

    def _alert(self, severity: str, step: int | None, message: str) -> None:
        self.alerts.append(Alert(severity, step, message))
        if len(self.alerts) > MAX_ALERTS:
            del self.alerts[: len(self.alerts) - MAX_ALERTS]

    def _lr_at(self, i: int) -> float:
        return float(self.series.lr.a[i]) if 0 <= i < len(self.series) else math.nan

    def _on_phase(self, i: int, cause: str) -> None:
        s = self.series
        prev = self.phases[-1] if self.phases else None
        if prev is not None:
            prev.stop = i
            self.ledger.new_phase(int(s.step.a[i]), self._lr_at(i), self._lr_at(i - 1))
        ph = PhaseBook(len(self.phases), i, cause, self.divergence is not None)
        self.phases.append(ph)
        self._phase_starts.append(i)

    def _on_warmup(self, i: int, starts: bool) -> None:
        """The phase's LR rises from logged step i on (it is not judged), or stopped rising there."""
        ph = self._phase_at(i)
        if ph is not None:
            ph.warm = True
            ph.judge_from = None if starts else i

    def _phase_at(self, i: int) -> PhaseBook | None:
        if not self.phases:
            return None
        return self.phases[max(bisect.bisect_right(self._phase_starts, i) - 1, 0)]

    def _on_catapult(self, c: Catapult) -> None:
        self.catapults += 1
        if self.catapults <= CATAPULT_ALERTS:
            steps = self.series.step.a
            self._alert("info", int(steps[c.stop]), f"catapult: the loss spiked {c.height:.3g}x its recent level at "
                                                     f"step {int(steps[c.start])} (peak at step {int(steps[c.peak])}) "
                                                     f"and recovered by step {int(steps[c.stop])}; not a divergence")

    def _on_divergence(self, div: Divergence) -> None:
        self.divergence = div
        steps = self.series.step.a
        began, flagged = int(steps[div.began]), int(steps[div.flagged])
        for ph in self.phases:
            if ph.stop > div.began or ph is self.phases[-1]:
                ph.diverged = True
        lr = self._lr_at(div.began)
        if not lr == lr:
            lr = self._lr_at(div.flagged)
        self._alert("error", flagged, f"diverged: {div.reason} from step {began} (detected at step {flagged})")
        self.ledger.withdraw(("drop_lr", "start_averaging", "lower_lr", "rollback"), flagged,
                              f"diverged at step {began}: {div.reason}")
        to_step = max(min(int(steps[max(div.began - 10, 0)]), began - recommend.ROLLBACK_STEPS), int(steps[0]))
        phase = len(self.phases) - 1
        self.ledger.add(phase, recommend.lower_lr_diverged(flagged, lr, began, div.reason))
        self.ledger.add(phase, recommend.rollback_diverged(flagged, began, to_step))

    def _chance_reference(self) -> float | None:
        """The loss of the untrained model: the first usable loss, or the mean of the first few
        when lower (a large LR may lift the loss within the first logged steps)."""
        first, early = self.series.first_loss, self._div_scan.initial
        if first is None or early is None:
            return early if first is None else first
        return min(first, early)

    def _check(self, ph: PhaseBook, i: int) -> None:
        s = self.series
        steps = s.step.a
        assert ph.judge_from is not None
        first_step, step = int(steps[ph.judge_from]), int(steps[i])
        v = judge_window(s, ph.judge_from, i + 1, self._chance_reference(), self._accuracy.at_chance(first_step, step),
                         ph.cause != "start")
        if v is None:
            return
        ph.verdict = v
        if v.reached and ph.converged_by is None:
            ph.converged_by = "train_loss"
            self._maybe_raise(ph, step, v.means_last, i)
        before = ph.confirm.confirmed
        changed = ph.confirm.feed(v)
        regime = ph.confirm.confirmed
        window = (int(steps[v.start]), int(steps[v.stop - 1]))
        lr = self._lr_at(i)
        if changed:
            moving = f", the LR moving {v.lr_change:+.0%}" if v.lr_change else ""
            self._alert("info", step, f"regime {regime} at lr {lr:.3g} since step {int(steps[ph.start])} "
                                      f"(loss level {v.level:.3g}, change {v.lo:+.1%}..{v.hi:+.1%} over steps "
                                      f"{window[0]}-{window[1]}{moving})")
            self._withdraw_contradicted(ph, before, regime, v, step, window)
        # An equilibrium whose advice was withdrawn (the loss fell further after all) can be reached
        # again at a lower level: the advice is given again from the new evidence. A chance verdict
        # the run contradicted by learning is not given again in the phase.
        if (regime == "equilibrium" and v.regime == "equilibrium" and v.settled
                and not self.ledger.has(ph.index, "drop_lr", withdrawn=False)):
            self.ledger.add(ph.index, recommend.drop_lr(step, lr, v.level, window, (v.lo, v.hi), v.lr_change,
                                                         self.convergence_threshold_lr))
            self.ledger.add(ph.index, recommend.start_averaging(step, int(steps[ph.judge_from]), v.level))
        elif changed and regime == "chance" and not self.ledger.has(ph.index, "rollback"):
            initial = self._chance_reference()
            self.ledger.add(ph.index, recommend.lower_lr_chance(step, lr, v.level, initial if initial is not None
                                                                 else v.level, self.convergence_threshold_lr))
            self.ledger.add(ph.index, recommend.rollback_chance(step, int(steps[ph.start])))

    def _withdraw_contradicted(self, ph: PhaseBook, before: str, regime: str, v: WindowVerdict, step: int,
                               window: tuple[int, int]) -> None:
        """A confirmed regime change withdraws the advice the old regime gave in this phase."""
        seen = f"the loss changed {v.change:+.1%} over steps {window[0]}-{window[1]}"
        if before == "chance":
            why = f"{seen} and the regime is now {regime}: not at chance after all"
            self.ledger.withdraw(("lower_lr", "rollback"), step, why, ph.index)
        elif before == "equilibrium" and regime != "equilibrium":
            why = f"{seen} and the regime is now {regime}: not stationary at lr {self._lr_at(v.stop - 1):.3g} after all"
            self.ledger.withdraw(("drop_lr", "start_averaging"), step, why, ph.index)

    def _maybe_raise(self, ph: PhaseBook, step: int, level: float, i: int) -> None:
        if ph.index == 0 and not self._raised:
            self._raised = True
            # the run's initial LR: under a warm-up or a OneCycle the LR it rose to, not its first
            peak = ph.peak_lr(self.series, i + 1)
            lr = peak if peak is not None else self._lr_at(ph.start)
            self.ledger.add(0, recommend.raise_lr(step, lr, level, self.convergence_threshold_lr))

    def _on_side(self, event: dict[str, Any], i: int) -> None:
        kind = event.get("kind")
        if kind == "sharpness":
            self._on_sharpness(event, i)
        elif kind == "metric":
            self._on_metric(event, i)
        elif event.get("action") == "start_averaging":
            step = event.get("step")
            self.ledger.follow(("start_averaging",), step, f"weight averaging started at step {step}")

    def _on_sharpness(self, event: dict[str, Any], i: int) -> None:
        method, value = event.get("method"), event.get("value")
        if method not in self._methods or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if method in ("hessian", "preconditioned") and event.get("converged") is False:
            return  # an estimate that did not converge is no measurement (TEAM contract 3)
        value = float(value)
        step = event.get("step") if event.get("step").__class__ is int else None
        self._sharp[method] = (value, step)
        ph = self._phase_at(i)
        if i < 0 or self.divergence is not None or ph is None or self.chosen_sharpness()[0] != method:
            return
        lr = self._lr_at(i)
        threshold = threshold_from(self._threshold_constant, lr)
        if threshold is None or not threshold == threshold or threshold <= 0:
            return
        ratio = float(value / threshold)
        edge = edge_state(ratio)
        if edge not in ("at_edge", "above") or edge in ph.edge_alerts:
            return
        ph.edge_alerts.add(edge)
        best_lr = max_stable_lr(self.optimizer_meta, value)
        during = " during the LR warm-up" if ph.judge_from is None else ""
        if edge == "above":
            self._alert("warning", step, f"sharpness {value:.4g} ({method}) is {ratio:.2f}x the stability threshold "
                                         f"{threshold:.4g} at lr {lr:.3g}{during}: above the edge of stability, expect "
                                         f"a catapult or divergence (largest stable lr {best_lr:.3g})")
        else:
            self._alert("info", step, f"sharpness {value:.4g} ({method}) reached the stability threshold "
                                      f"{threshold:.4g} at lr {lr:.3g}{during} (ratio {ratio:.2f}): at the edge of "
                                      f"stability")

    def _on_metric(self, event: dict[str, Any], i: int) -> None:
        self.metric_events.append(event)
        if i < 0:
            return
        step = event.get("step")
        step = step if step.__class__ is int else int(self.series.step.a[i])
        self._accuracy.add(event, step)
        if self.divergence is not None or event.get("phase") in AVERAGED_PHASES:
            return  # the averaged model's loss is not the run's
        full = next((float(v) for v in (event.get(n) for n in FULL_TRAIN_LOSS_FIELDS)
                     if isinstance(v, (int, float)) and not isinstance(v, bool)), None)
        ph = self._phase_at(i)
        if full is None or not full < CONVERGED_LOSS or ph is None or ph.converged_by == "full_train_loss":
            return
        ph.converged_by = "full_train_loss"
        self._alert("info", step, f"full-train loss {full:.3g} < {CONVERGED_LOSS:g} at lr {self._lr_at(i):.3g}: "
                                  f"converged")
        self._maybe_raise(ph, step, full, i)

    # -- the answer ----------------------------------------------------------------------

    def chosen_sharpness(self) -> tuple[str | None, float, int | None]:
        """The latest usable sharpness of the most trusted method logged: (method, value, step)."""
        for method in self._methods:
            if method in self._sharp:
                value, step = self._sharp[method]
                return method, value, step
        return None, math.nan, None

    def state(self) -> AdvisorState:
        """The verdict now (judges what was queued first; then O(phases + alerts))."""
        self._judge()
        return advisor_state(self)


__all__ = ["Advisor", "STEP_FIELDS_READ"]
