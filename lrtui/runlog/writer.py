"""Append events to a run directory from the training process without ever hurting it.

The caller only appends a dict to a list; a daemon thread encodes and writes the batch at least
every ``flush_interval`` seconds. A failed write disables the log and is reported once; it is
never raised into the training loop.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable

from lrtui.runlog.format import (
    EVENTS_FILE,
    KIND_END,
    META_FILE,
    SCHEMA_VERSION,
    encode_event,
    encode_events,
    encode_json,
)

_live_writers: "weakref.WeakSet[RunWriter]" = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for writer in list(_live_writers):
        writer.flush(timeout=2.0)


atexit.register(_flush_all_at_exit)


def _forget_writers_in_child() -> None:
    # A forked child (a DataLoader worker, say) inherits the writers but not their threads, and
    # maybe a lock held mid-write: it must neither write nor wait. The parent keeps the log.
    for writer in list(_live_writers):
        writer._forked = True
        writer._refusing = True
    _live_writers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers_in_child)


_now = time.time


def _report_to_stderr(message: str) -> None:
    # A warning on the "lrtui.runlog" logger: one line on stderr unless logging is configured,
    # so ``logging.getLogger("lrtui")`` silences or redirects it.
    try:
        logging.getLogger("lrtui.runlog").warning("lrtui: %s", message)
    except Exception:  # a handler may fail (stderr itself may be gone); the training must not notice
        pass


class RunWriter:
    """Writes ``meta.json`` once, then appends events to ``events.jsonl``.

    Example:
        >>> w = RunWriter("runs/a", {"name": "a"})        # doctest: +SKIP
        >>> w.write("step", 0, loss=0.69)                  # doctest: +SKIP
        >>> w.close()                                      # doctest: +SKIP

    Args:
        run_dir: directory to create (parents too); an existing run there is appended to.
        meta: metadata fields; ``run_id``, ``name``, ``started_at``, ``host``, ``pid`` and
            ``argv`` are filled in when missing, ``schema`` always.
        flush_interval: seconds between background writes (the format promises <= 0.5).
        max_pending: events held in memory before ``write`` waits for the disk.
        block_timeout: longest a ``write`` waits for room; after that the event is dropped,
            counted, and reported once, so a stalled disk can never stall training.
        on_error: called once with a message when the log is disabled or drops events;
            defaults to printing one line on stderr.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        *,
        flush_interval: float = 0.25,
        max_pending: int = 1_000_000,
        block_timeout: float = 1.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.block_timeout = block_timeout
        self.on_error = on_error or _report_to_stderr
        self.error: str | None = None
        self.dropped = 0
        self.written = 0
        self._pending: list[dict[str, Any]] = []
        self._mutex = mutex = threading.Lock()
        self._lock = threading.Condition(mutex)  # wakes the writer thread
        self._flushed = threading.Condition(mutex)  # wakes callers waiting for the disk
        self._in_flight = 0
        self._closed = False
        self._urgent = False
        self._drop_reported = False
        self._encode_reported = False
        self._stalled = False
        self._forked = False
        self._refusing = False  # closed, failed or in a forked child: events are discarded
        self._file = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # The fields every run has, unless the caller (the probe) says more precisely.
            full_meta = {
                "schema": SCHEMA_VERSION,
                "run_id": uuid.uuid4().hex,
                "name": self.run_dir.name,
                "started_at": time.time(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "argv": list(sys.argv),
            }
            full_meta.update(meta or {})
            full_meta["schema"] = SCHEMA_VERSION
            tmp = self.run_dir / (META_FILE + ".tmp")
            tmp.write_bytes(encode_json(full_meta))
            os.replace(tmp, self.run_dir / META_FILE)
            self._file = open(self.run_dir / EVENTS_FILE, "ab")
            _end_torn_line(self._file)
        except Exception as exc:  # never raise into the training process
            self._disable(f"cannot create run directory {self.run_dir}: {_describe(exc)}")
            return
        self._thread = threading.Thread(target=self._run, name="lrtui-runlog-writer", daemon=True)
        self._thread.start()
        _live_writers.add(self)

    @property
    def ok(self) -> bool:
        """False once writing failed; events are then discarded."""
        return self.error is None

    def write(self, kind: str, step: int | None, **fields: Any) -> None:
        """Append one event; ``time`` is now. Never raises, never blocks beyond ``block_timeout``."""
        # The training loop calls this every step: the common path is one dict and one lock.
        if self._refusing:
            return
        # kind, step, time first: readers recognise step lines by that start.
        event = {"kind": kind, "step": step, "time": _now(), **fields}
        with self._mutex:
            if len(self._pending) < self.max_pending:
                self._pending.append(event)
                return
        self._write_when_full(event)

    def write_event(self, event: dict[str, Any]) -> None:
        """Append an already-built event (it must carry kind, step and time)."""
        if self._refusing:
            return
        with self._mutex:  # the plain lock: cheaper than entering the Condition
            if len(self._pending) < self.max_pending:
                self._pending.append(event)
                return
        self._write_when_full(event)

    def _write_when_full(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._urgent = True
                self._lock.notify_all()
                # Once the disk has stalled, drop at once until the writer gets through a batch,
                # so training pays block_timeout once per stall, not once per event.
                deadline = time.monotonic() + (0.0 if self._stalled else self.block_timeout)
                while len(self._pending) >= self.max_pending and self.error is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._stalled = True
                        self.dropped += 1
                        if not self._drop_reported:
                            self._drop_reported = True
                            self._report(
                                f"run log {self.run_dir} cannot keep up with the disk; "
                                "dropping events (counted in the end record)"
                            )
                        return
                    self._flushed.wait(left)
            self._pending.append(event)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event appended so far is written; False on timeout or failure."""
        if self._file is None or self._forked:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._urgent = True
            self._lock.notify_all()
            while (self._pending or self._in_flight) and self.error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._flushed.wait(left)
        return self.error is None

    def close(self, status: str = "finished", exception: BaseException | None = None) -> None:
        """Write the end record, flush, and stop the writer thread. Safe to call twice."""
        if self._closed or self._forked:
            return
        # Flush first, so events that turn out unencodable are in the dropped count.
        # A disk that did not take the events in 5 s gets no more time for the end record.
        drained = self.flush(timeout=max(5.0, self.block_timeout))
        end: dict[str, Any] = {"status": status, "events_dropped": self.dropped}
        if exception is not None:
            end["exception"] = type(exception).__name__
            end["message"] = str(exception)[:500]
        self.write(KIND_END, None, **end)
        self.flush(timeout=max(5.0, self.block_timeout) if drained else 0.5)
        with self._lock:
            self._closed = True
            self._refusing = True
            self._lock.notify_all()
        if self._file is not None:
            # The writer thread closes the file itself: closing it here while the thread is stuck
            # in a write to a hung disk would wait on the file's lock for as long as the disk.
            self._thread.join(timeout=5.0 if drained else 0.5)
        _live_writers.discard(self)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close("failed" if exc is not None else "finished", exc)

    def _run(self) -> None:
        while True:
            with self._lock:
                # Gather a batch for flush_interval; flush(), close() or a full buffer wake us early.
                if not self._urgent and not self._closed:
                    self._lock.wait(self.flush_interval)
                self._urgent = False
                batch, self._pending = self._pending, []
                self._in_flight = len(batch)
                closed = self._closed
            if batch and self.error is None:
                try:
                    data = self._encode(batch)
                    self._file.write(data)
                    self._file.flush()
                    self.written += len(batch)
                except Exception as exc:
                    self._disable(f"cannot write run log {self.run_dir}: {_describe(exc)}")
            with self._lock:
                self._in_flight = 0
                self._stalled = False
                self._flushed.notify_all()
            if closed:
                try:
                    self._file.close()
                except Exception:
                    pass
                return

    def _encode(self, batch: list[dict[str, Any]]) -> bytes:
        try:
            return encode_events(batch)
        except Exception:
            pass
        # One event that cannot be encoded (a key that is not text, say) must not cost the others.
        lines = []
        for event in batch:
            try:
                lines.append(encode_event(event))
            except Exception as exc:
                with self._lock:
                    self.dropped += 1
                if not self._encode_reported:
                    self._encode_reported = True
                    self._report(f"run log {self.run_dir}: cannot encode an event of kind "
                                 f"{event.get('kind')!r} ({_describe(exc)}); dropped (counted in the end record)")
        return b"".join(lines)

    def _report(self, message: str) -> None:
        try:
            self.on_error(message)
        except Exception:  # a failing callback must not reach the training loop either
            pass

    def _disable(self, message: str) -> None:
        if self.error is not None:
            return
        self.error = message
        self._refusing = True
        with self._lock:
            self._pending = []
            self._flushed.notify_all()
        try:
            self.on_error(message + "; logging disabled, training continues")
        except Exception:
            pass


def _end_torn_line(f: Any) -> None:
    """Before appending to an existing log, end a last line a crashed writer left unfinished.

    Otherwise the first new event would be glued to it and both would be lost as garbage.
    """
    if not os.path.isfile(f.name):  # a pipe or a device: nothing to repair, nothing to seek
        return
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
        return
    with open(f.name, "rb") as reader:
        reader.seek(size - 1)
        if reader.read(1) != b"\n":
            f.write(b"\n")
            f.flush()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
