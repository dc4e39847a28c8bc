"""Threads of ``lrtui watch``: one follows each run as it is written, one looks for new runs.

They read and advise, keep the results in the run's RunView, and tell the screen by posting a
message; they never touch a widget.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from lrtui.advisor import Advisor
from lrtui.app.messages import Post, RunChanged, RunsFound
from lrtui.app.runview import RunView, make_advisor
from lrtui.runlog import RunData, RunFollower, RunFormatError, find_runs, finite_float

#: Largest share of one core a live run's reading thread takes at the run's live edge.
READ_CPU_SHARE = 0.5
#: How far behind the newest event may be for the reading to count as live (see READ_CPU_SHARE).
LIVE_EDGE_SECONDS = 60.0


def at_live_edge(event: dict[str, Any]) -> bool:
    """True when the event was written less than LIVE_EDGE_SECONDS ago."""
    written = finite_float(event.get("time"))
    return written is not None and abs(time.time() - written) < LIVE_EDGE_SECONDS


class LiveSource:
    """Follows one run in a thread: adds each batch to its view, updates its advisor, posts RunChanged."""

    def __init__(self, view: RunView, post: Post, *, use_inotify: bool = True) -> None:
        self.view = view
        self.post = post
        self.use_inotify = use_inotify
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"follow {view.path.name}", daemon=True)
        self.advisor: Advisor | None = None

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        view = self.view
        try:
            with RunFollower(view.path, use_inotify=self.use_inotify) as follower:
                for batch in follower.follow(self.stop):
                    began = time.thread_time()
                    self.apply(batch.events, batch.meta, batch.reset, batch.skipped, batch.resume)
                    # At the live edge of a run that logs tens of thousands of events a second,
                    # leave the interpreter (one lock for all threads) to the screen after a
                    # heavy batch, so keys are still handled promptly: reading then takes at
                    # most READ_CPU_SHARE of a core. Reading a backlog (a run joined late, or
                    # more than LIVE_EDGE_SECONDS behind) goes at full speed.
                    spent = time.thread_time() - began
                    if spent > 0.005 and batch.events and at_live_edge(batch.events[-1]):
                        self.stop.wait(spent * (1.0 - READ_CPU_SHARE) / READ_CPU_SHARE)
        except Exception as exc:  # an unreadable run must not end the app: show why on its screen
            with view.lock:
                view.error = str(exc) if isinstance(exc, RunFormatError) else f"{type(exc).__name__}: {exc}"
                view.version += 1
            self.post(RunChanged(view.key))

    def apply(self, events: list[dict[str, Any]], meta: dict[str, Any] | None, reset: bool,
              skipped: int, resume: int | None = None) -> None:
        """Add one batch of events to the view (called in the reading thread). After a resume at
        step K (``Batch.resume``) the view's data drops the steps it replaces (``RunData.extend``
        does) and the advisor starts over from the data."""
        view = self.view
        with view.lock:
            if reset:
                view.data = RunData()
                view.resets += 1
                self.advisor = None
            if meta is not None:
                view.meta = meta
            if self.advisor is None and view.meta is not None and view.advisor_error is None:
                self.advisor, view.advisor_error = make_advisor(view.meta)
            view.data.extend(events)
            view.skipped += skipped
            view.loaded = True
            view.version += 1
            if resume is not None and self.advisor is not None:
                self.advisor, view.advisor_error = make_advisor(view.meta or {})
                fresh = True
            else:
                fresh = False
        if self.advisor is not None and events:
            try:
                if fresh:
                    with view.lock:
                        self.advisor.update_data(view.data)
                else:
                    self.advisor.update_many(events)
                state = self.advisor.state()
            except Exception as exc:  # an advisor bug must not stop the reading
                state = None
                view.advisor_error = f"advisor: {type(exc).__name__}: {exc}"
            with view.lock:
                view.state = state
        self.post(RunChanged(view.key))

    def close(self) -> None:
        self.stop.set()


class DirectoryScanner:
    """Looks for run directories appearing under a sweep directory, about once a second."""

    def __init__(self, root: Path, post: Post, interval: float = 1.0) -> None:
        self.root = root
        self.post = post
        self.interval = interval
        self.known: set[Path] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scan runs", daemon=True)

    def start(self, known: list[Path]) -> None:
        self.known = set(known)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                new = [p for p in find_runs(self.root) if p not in self.known]
            except OSError:
                continue
            if new:
                self.known.update(new)
                self.post(RunsFound(new))

    def close(self) -> None:
        self.stop.set()


__all__ = ["LIVE_EDGE_SECONDS", "READ_CPU_SHARE", "DirectoryScanner", "LiveSource", "at_live_edge"]
