"""The advisors of a replay, kept at the replay position by one thread (the shown run first).

Small moves forward feed an advisor the events in between; a move back or a long jump starts a
fresh advisor on the run's prefix through its bulk path (``Advisor.update_data``: the same
state in one vectorized pass).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from lrtui.advisor import Advisor
from lrtui.app.messages import Post, RunChanged
from lrtui.app.runview import RunView, make_advisor
from lrtui.runlog import RunData, float_column

#: Field order of a rebuilt event: a step's own event before the other events of that step.
_EVENT_RANK = {"step": 0}


class RunSlice:
    """A run's columns and records up to a step, as they were at one moment.

    What a feeding thread keeps using while the run is still being read, and what the
    advisor's bulk path takes: shaped like RunData where the advisor reads it (``table``,
    ``records``, ``kinds``, ``last_step``, ``len``). Events of no step (the end record) belong
    after the last step.
    """

    def __init__(self, tables: dict[str, dict[str, np.ndarray]], records: dict[str, list[dict[str, Any]]],
                 last_step: int | None, upto: float = math.inf) -> None:
        self._tables = tables
        self.records = records
        self.last_step = last_step
        self.upto = upto
        self._cut: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def of(cls, data: RunData) -> RunSlice:
        """The whole of ``data`` now (call it with the run's lock held: it joins the columns)."""
        return cls({kind: data.table(kind) for kind in data.kinds()},
                   {kind: list(recs) for kind, recs in data.records.items()}, data.last_step)

    def _reached(self, step: Any) -> bool:
        if step.__class__ is int:
            return step <= self.upto
        return self.last_step is None or self.upto >= self.last_step

    def until(self, step: float) -> RunSlice:
        """The events at or before ``step``."""
        part = RunSlice(self._tables, {}, self.last_step, step)
        part.records = {kind: [r for r in recs if part._reached(r.get("step"))] for kind, recs in self.records.items()}
        return part

    def table(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self._cut:
            table = self._tables.get(kind, {})
            if math.isfinite(self.upto) and table and "step" in table:
                steps = table["step"]
                if kind == "end":
                    keep = np.full(steps.shape, self._reached(None))
                else:
                    keep = steps <= self.upto
                table = {name: col[keep] for name, col in table.items()}
            self._cut[kind] = table
        return self._cut[kind]

    def kinds(self) -> list[str]:
        return list(self._tables)

    def __len__(self) -> int:
        return sum(len(next(iter(self.table(k).values()), ())) for k in self._tables)


def events_between(data: RunSlice, after: float, upto: float) -> list[dict[str, Any]]:
    """The step, sharpness and metric events with ``after < step <= upto``, in step order
    (a step's own event before the other events of that step), rebuilt from the columns."""
    rows: list[tuple[float, int, int, dict[str, Any]]] = []
    for kind in ("step", "sharpness"):
        table = data.table(kind)
        if not table or "step" not in table:
            continue
        steps = float_column(table["step"])
        idx = np.flatnonzero((steps > after) & (steps <= upto))
        for i in idx.tolist():
            event: dict[str, Any] = {"kind": kind}
            for name, col in table.items():
                value = col[i]
                if col.ndim == 2:
                    value = [float(v) for v in value]
                elif isinstance(value, np.generic):
                    value = value.item()
                event[name] = value
            event["step"] = int(event["step"])
            rows.append((event["step"], _EVENT_RANK.get(kind, 1), i, event))
    for record in data.records.get("metric", []):
        s = record.get("step")
        if isinstance(s, int) and after < s <= upto:
            rows.append((s, 1, len(rows), record))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    events = [r[3] for r in rows]
    last = data.last_step
    if last is not None and after < last <= upto:
        events.extend(data.records.get("end", []))
    return events


class AdvisorFeed:
    """The advisor of one recorded run, brought to a replay position."""

    #: Moves forward over more logged steps than this take the bulk path.
    BULK_AFTER = 2000

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.advisor: Advisor | None = None
        self.position: float = -np.inf
        self.reload = False  # the run was read further since it was fed: start it over

    def advance_to(self, step: float, stop: threading.Event) -> bool:
        """Bring the advisor to ``step``; False when ``stop`` was set before it finished."""
        view = self.view
        if view.meta is None:
            return True
        with view.lock:
            data = RunSlice.of(view.data)
        steps = data.table("step").get("step") if data.table("step") else None
        between = 0 if steps is None else int(np.count_nonzero((steps > self.position) & (steps <= step)))
        if self.advisor is None or step < self.position or between > self.BULK_AFTER:
            self.advisor, error = make_advisor(view.meta)
            view.advisor_error = error
            if self.advisor is None:
                self.position = step
                return True
            self.advisor.update_data(data.until(step))
        else:
            self.advisor.update_many(events_between(data, self.position, step))
        if stop.is_set():
            return False
        self.position = step
        state = self.advisor.state()
        with view.lock:
            view.state = state
        return True

    def close(self) -> None:
        self.advisor = None


class ReplayFeeder:
    """One thread that keeps every run's advisor at the replay position (the shown run first)."""

    def __init__(self, post: Post) -> None:
        self.post = post
        self.feeds: dict[str, AdvisorFeed] = {}
        self.order: list[str] = []
        self.target: float = 0.0
        self.wake = threading.Event()
        self.stop = threading.Event()
        self._interrupt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replay advisor", daemon=True)
        self._lock = threading.Lock()
        self._seeked = False

    def add(self, view: RunView) -> None:
        with self._lock:
            self.feeds[view.key] = AdvisorFeed(view)

    def loaded(self, key: str) -> None:
        """Run ``key`` has been read to its end: bring its advisor (again, from the whole run) to
        the replay position. A run still loading when the position was set was fed only its
        first part, and one added after it was not fed at all (paused, nothing seeks again)."""
        with self._lock:
            feed = self.feeds.get(key)
            if feed is None:
                return
            feed.reload = True
            if self._seeked and key not in self.order:
                self.order.append(key)
        self.wake.set()

    def seek(self, step: float, first: str | None) -> None:
        """Bring the advisors to ``step``, starting with run ``first``."""
        with self._lock:
            self.target = step
            self._seeked = True
            keys = list(self.feeds)
            if first in self.feeds:
                keys.remove(first)
                keys.insert(0, first)
            self.order = keys
        self._interrupt.set()
        self.wake.set()

    def catching_up(self, key: str, position: float) -> bool:
        """True while run ``key``'s advisor is not yet at ``position``."""
        feed = self.feeds.get(key)
        return feed is not None and feed.position != position

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            self._interrupt.clear()
            with self._lock:
                target, keys = self.target, list(self.order)
            for key in keys:
                feed = self.feeds[key]
                if feed.reload:
                    feed.reload, feed.advisor, feed.position = False, None, -np.inf
                if feed.position == target:
                    continue
                try:
                    finished = feed.advance_to(target, self._interrupt)
                except Exception as exc:  # show it, keep replaying
                    feed.view.advisor_error = f"advisor: {type(exc).__name__}: {exc}"
                    feed.position = target
                    finished = True
                self.post(RunChanged(key))
                if not finished or self.stop.is_set():
                    break

    def close(self) -> None:
        self.stop.set()
        self._interrupt.set()
        self.wake.set()
        for feed in self.feeds.values():
            feed.close()


__all__ = ["AdvisorFeed", "ReplayFeeder", "RunSlice", "events_between"]
