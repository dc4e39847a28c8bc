"""Tail a growing run directory: inotify (watchdog) wake-ups, with polling as the fallback.

The follower reads only complete lines, so a line still being written is read once its newline
lands. It survives a run directory that does not exist yet (it waits), garbage lines (skipped and
counted), and a log that is truncated or replaced (it starts over and says so). A ``resume``
event starts a batch of its own (``Batch.resume``), so a consumer drops what it replaces before
it takes what follows.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lrtui.runlog.format import META_FILE, RunFormatError, decode_lines, read_meta
from lrtui.runlog.lines import LineAssembler, cut_at_resumes, gc_paused
from lrtui.runlog.numbers import NON_FINITE_MARKERS, restore_non_finite
from lrtui.runlog.run import events_path

#: Largest read per call, so a huge backlog is handed over in pieces and the caller stays live.
READ_LIMIT = 16 << 20
#: Bytes at the start of the log remembered to notice a log that was truncated and rewritten
#: past the old read position between two looks (its size alone would not tell).
HEAD_BYTES = 256


class _DropStopRace(logging.Filter):
    """Drops watchdog's report of an event it read after the observer was told to stop.

    watchdog (7.x) logs "InotifyEmitter.queue_events() called when the thread is inactive" at
    ERROR when an inotify event queued before ``stop()`` is read after it: a harmless race
    inside watchdog (the event is discarded, which is what stopping means), but Python's
    last-resort handler prints it on the user's terminal. Every other message passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("InotifyEmitter.queue_events() called when the thread is inactive")


_stop_race_filter = _DropStopRace()


def _quiet_watchdog_stop_race() -> None:
    logger = logging.getLogger("watchdog.observers.inotify")
    if _stop_race_filter not in logger.filters:
        logger.addFilter(_stop_race_filter)


@dataclass
class Batch:
    """What one read found.

    Attributes:
        events: new events in file order, non-finite floats restored.
        skipped: garbage or over-long lines skipped in this read.
        reset: the log was truncated or replaced; drop what was read before, ``events`` start over.
        meta: the run's metadata when first seen (and again after a reset), else None.
        resume: K when the run was resumed at step K (docs/run-format.md): before taking
            ``events`` (the first of which is the ``resume`` event), drop every event held of the
            kinds a resume replaces at a step >= K, and every end record. ``RunData.extend`` does
            this itself. A batch holds at most one resume, and only as its first event: the
            follower hands over the events before a resume in a batch of their own first.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    reset: bool = False
    meta: dict[str, Any] | None = None
    resume: int | None = None


class _Wake:
    """watchdog handler that only sets an event; all reading happens in the follower."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def dispatch(self, _event: Any) -> None:
        self._event.set()


class RunFollower:
    """Follow one run directory.

    Example:
        >>> with RunFollower("runs/a") as f:                 # doctest: +SKIP
        ...     for batch in f.follow(stop_event):
        ...         handle(batch.events)

    Args:
        run_dir: the run to follow; it may not exist yet.
        poll_interval: seconds between checks when no inotify wake-up comes. With inotify this
            is only a backstop (changes made on another NFS client send no inotify event).
        use_inotify: False forces plain polling.
        wake: the event that inotify sets on a change (and ``wait`` waits on); followers of several
            runs that share one can be waited on together. Default: one of its own.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], *, poll_interval: float = 0.25, use_inotify: bool = True,
        wake: threading.Event | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self.mode = "polling"
        self.meta: dict[str, Any] | None = None
        self.skipped_total = 0
        self.events_total = 0
        self._file: Any = None
        self._ident: tuple[int, int] | None = None
        self._offset = 0
        self._head = b""
        self._lines = LineAssembler()
        self._pending = b""  # complete lines read but not handed over yet (after a resume cut)
        self._size = 0  # the log's size at the last look
        self._changed = wake if wake is not None else threading.Event()
        self._observer: Any = None

    # -- reading -------------------------------------------------------------------------

    def read_new(self) -> Batch:
        """Read whatever is new, without waiting. Raises RunFormatError for a newer schema or an
        unreadable metadata file."""
        batch = Batch()
        if self.meta is None:
            if not (self.run_dir / META_FILE).is_file():
                return batch
            self.meta = read_meta(self.run_dir)
            batch.meta = self.meta
            self._start_watch()
        path = events_path(self.run_dir)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if self._file is not None:  # log removed: whatever comes next starts over
                self._close_file()
                batch.reset = True
            return batch
        except OSError as exc:  # a link loop, a directory that is not readable
            raise RunFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
        ident = (st.st_dev, st.st_ino)
        self._size = st.st_size
        if self._file is not None and (
            ident != self._ident or st.st_size < self._offset or not self._same_head(st.st_size)
        ):
            self._close_file()
            batch.reset = True
            self.meta = read_meta(self.run_dir)
            batch.meta = self.meta
        if self._file is None:
            try:
                self._file = open(path, "rb")
            except OSError as exc:
                raise RunFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
            self._ident = ident
            self._offset = 0
            self._head = b""
            self._lines = LineAssembler()
        if self._pending:
            data, self._pending = self._pending, b""
        else:
            if st.st_size <= self._offset:
                return batch
            self._file.seek(self._offset)
            block = self._file.read(READ_LIMIT)
            if self._offset < HEAD_BYTES:
                self._head = (self._head + block)[:HEAD_BYTES]
            self._offset += len(block)
            if len(block) == READ_LIMIT:
                self._changed.set()  # more is waiting; come back without sleeping
            data, batch.skipped = self._lines.feed(block)
        pieces = cut_at_resumes(data) if data else []
        if len(pieces) > 1 or (pieces and pieces[0][0] is not None):
            batch.resume, data = pieces[0]
            self._pending = b"".join(piece for _, piece in pieces[1:])
            if self._pending:
                self._changed.set()  # the lines after the next resume: come back without sleeping
        if data:
            with gc_paused():
                events, bad = decode_lines(data.split(b"\n"))
                batch.skipped += bad
                if any(marker in data for marker in NON_FINITE_MARKERS):
                    events = [restore_non_finite(e) for e in events]
            batch.events = events
        self.skipped_total += batch.skipped
        self.events_total += len(batch.events)
        return batch

    @property
    def caught_up(self) -> bool:
        """True when every line in the log at the last look has been handed over."""
        return not self._pending and self._offset >= self._size

    @property
    def consumed(self) -> int:
        """Bytes of the log whose lines have been handed over (``load_run(..., upto=consumed)``
        reads the same events)."""
        return self._offset - len(self._pending) - len(self._lines.partial)

    def _same_head(self, size: int) -> bool:
        """True when the log still starts with the bytes read from it (one small read)."""
        if not self._head or size == self._offset:
            return True
        try:
            return os.pread(self._file.fileno(), len(self._head), 0) == self._head
        except OSError:
            return False

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until inotify reports a change or ``timeout`` (default ``poll_interval``) passes."""
        self._changed.wait(self.poll_interval if timeout is None else timeout)
        self._changed.clear()

    def follow(self, stop: threading.Event | None = None) -> Iterator[Batch]:
        """Yield each non-empty batch until ``stop`` is set (forever without one)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            batch = self.read_new()
            if batch.events or batch.skipped or batch.reset or batch.meta is not None or batch.resume is not None:
                yield batch
            if not self._changed.is_set():
                self.wait()
            else:
                self._changed.clear()

    # -- watching ------------------------------------------------------------------------

    def _start_watch(self) -> None:
        if not self.use_inotify or self._observer is not None:
            return
        try:
            from watchdog.observers.inotify import InotifyObserver
        except Exception:  # not Linux, or watchdog without inotify support
            return
        _quiet_watchdog_stop_race()
        try:
            observer = InotifyObserver()
            observer.schedule(_Wake(self._changed), str(self.run_dir), recursive=False)
            observer.daemon = True
            observer.start()
        except Exception:  # inotify watch limit, unsupported filesystem: poll instead
            return
        self._observer = observer
        self.mode = "inotify"

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
        self._ident = None
        self._offset = 0
        self._head = b""
        self._lines = LineAssembler()
        self._pending = b""

    def close(self) -> None:
        """Stop watching and close the log."""
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=2.0)
            except Exception:
                pass
            self._observer = None
        self._close_file()

    def __enter__(self) -> RunFollower:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Batch", "RunFollower"]
