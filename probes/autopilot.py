"""The autopilot: the advisor running in a thread of the training process, deciding when to act.

The probe hands it every event it logs (the step events of each flushed batch, the metrics); a
daemon thread feeds them to ``lrtui.advisor.Advisor`` (numpy, no torch) and, the first time the
advisor recommends an action the autopilot may take, schedules it. A recommendation made at
logged step S is applied at optimizer step S + ``lag``, where ``lag`` covers the most steps a
logged step's event can wait in the probe's batch before it is handed over, plus
``MARGIN_STEPS``: so the step an action lands on depends on the run alone, never on how fast the
thread was. With both actions, the average is taken at the equilibrium LR first, over the window
the advisor sized (``averaging_steps``), and the LR is dropped when it is complete (the average
then stops: it holds the equilibrium's checkpoints, not the fine-tuning's). The training thread waits for the thread only when that would otherwise break (the
thread fell more than ``MARGIN_STEPS`` behind), and never longer than ``MAX_WAIT_SECONDS``.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from lrtui.advisor import Advisor, Recommendation

#: Optimizer steps the thread has, beyond the batching, to read a batch.
MARGIN_STEPS = 64
#: Longest the training thread waits for a thread that fell behind; then the autopilot is off.
MAX_WAIT_SECONDS = 30.0
#: What the autopilot may act on, in the order it applies two that fall due together.
AUTOPILOT_ACTIONS = ("drop_lr", "start_averaging")


@dataclass
class Decision:
    """A recommendation the autopilot will follow at optimizer step ``due``."""

    recommendation: Recommendation
    due: int


class Autopilot:
    """Feeds the run's events to an ``Advisor`` in a thread and schedules what it recommends.

    Args:
        meta: the run's ``meta.json`` fields (the optimizer, for the stability threshold).
        actions: the recommendations it acts on (a subset of ``AUTOPILOT_ACTIONS``), each once.
        lag: called when a batch is handed over; the optimizer steps from a logged step to the
            one where a recommendation made there is applied.
        on_fault: called once (from either thread) when the autopilot stops on an error.
    """

    def __init__(self, meta: dict[str, Any], actions: tuple[str, ...], lag: Callable[[], int],
                 on_fault: Callable[[str], None]) -> None:
        self.advisor = Advisor(meta)
        self.actions = actions
        self._lag = lag
        self._on_fault = on_fault
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[int, int, list[dict[str, Any]]]] = collections.deque()
        #: The step by which the oldest unread batch must be read (inf: none waiting).
        self.oldest_due = math.inf
        self._decisions: list[Decision] = []
        self.next_due = math.inf  # the earliest decision's step
        self._acted: set[str] = set()
        self.failed: str | None = None
        self._closed = False
        self.waited_seconds = 0.0
        self.waits = 0
        #: CPU seconds the thread spent reading events and advising (its own clock).
        self.cpu_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="lrtui-autopilot", daemon=True)
        self._thread.start()

    # -- the training thread ---------------------------------------------------------------

    def observe(self, events: list[dict[str, Any]]) -> None:
        """Hand over events just logged (in log order). Cheap: a list append under a lock."""
        if not events or self.failed is not None:
            return
        first = min((e["step"] for e in events if isinstance(e.get("step"), int)), default=None)
        with self._cond:
            if first is None:
                first = -1  # no step of its own: due as soon as anything is
            due = first + self._lag()
            self._queue.append((first, due, events))
            self.oldest_due = min(self.oldest_due, due)
            self._cond.notify()

    def due(self, step: int) -> list[Recommendation]:
        """The recommendations to apply at optimizer ``step`` (called at every step's boundary).

        Waits for the thread only if a batch it should have read by now is still unread.
        """
        if self.oldest_due <= step and self.failed is None:
            self._catch_up(step)
        if self.next_due > step:
            return []
        with self._cond:
            ready = [d for d in self._decisions if d.due <= step]
            self._decisions = [d for d in self._decisions if d.due > step]
            self.next_due = min((d.due for d in self._decisions), default=math.inf)
        order = {a: i for i, a in enumerate(AUTOPILOT_ACTIONS)}
        return [d.recommendation for d in sorted(ready, key=lambda d: (d.due, order.get(d.recommendation.action, 9)))]

    def _catch_up(self, step: int) -> None:
        started = time.monotonic()
        with self._cond:
            while self.oldest_due <= step and self.failed is None and not self._closed:
                left = MAX_WAIT_SECONDS - (time.monotonic() - started)
                if left <= 0 or not self._thread.is_alive():
                    self._fail(f"the advisor thread fell {MAX_WAIT_SECONDS:g} s behind" if left <= 0
                               else "the advisor thread stopped")
                    break
                self._cond.wait(min(left, 1.0))
        self.waits += 1
        self.waited_seconds += time.monotonic() - started

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        return
                    _first, due, events = self._queue[0]
                started = time.thread_time()
                self._read(events, due)
                self.cpu_seconds += time.thread_time() - started
                with self._cond:
                    self._queue.popleft()
                    self.oldest_due = min((d for _, d, _ in self._queue), default=math.inf)
                    self._cond.notify_all()
        except Exception as exc:  # the training must never notice; the autopilot stops
            with self._cond:
                self._fail(f"{type(exc).__name__}: {exc}")
                self._cond.notify_all()

    def _read(self, events: list[dict[str, Any]], due_after: int) -> None:
        advisor = self.advisor
        for event in events:
            advisor.update(event)
        lag = due_after - min((e["step"] for e in events if isinstance(e.get("step"), int)), default=due_after)
        recs = [r for r in advisor.state().recommendations
                if r.action in self.actions and r.action not in self._acted and r.step is not None]
        averaging = next((r for r in recs if r.action == "start_averaging"), None)
        for rec in recs:
            self._acted.add(rec.action)
            due = rec.step + lag
            if rec.action == "drop_lr" and "start_averaging" in self.actions:
                # Average at the equilibrium LR first, over the window the advisor sized, then drop.
                window = averaging.numbers.get("averaging_steps") if averaging is not None else None
                due += int(window) if isinstance(window, (int, float)) and window > 0 else 0
            decision = Decision(rec, due)
            with self._cond:
                self._decisions.append(decision)
                self.next_due = min(self.next_due, decision.due)

    def _fail(self, message: str) -> None:
        """Stop acting (caller holds the lock or is the only thread that can race on it)."""
        if self.failed is not None:
            return
        self.failed = message
        self.oldest_due = math.inf
        self._decisions = []
        self.next_due = math.inf
        try:
            self._on_fault(message)
        except Exception:
            pass
