"""Append events to a run directory from the training process without ever hurting it.

The caller only appends a dict to a list; a daemon thread encodes and writes the batch at least
every ``flush_interval`` seconds. A failed write disables the log and is reported once; it is
never raised into the training loop.

Every file is opened relative to the run directory's own descriptor with ``O_NOFOLLOW``: a link
planted as ``events.jsonl`` or ``meta.json.tmp`` is refused (said once, the log disabled), never
written through. A log that stopped for want of room (ENOSPC, EFBIG, EDQUOT) still gets its end
record at close, in room made from this writer's own last lines (counted as dropped), so a
finished run never reads as crashed. A run directory deleted under a live run is noticed within
one flush interval and reported once.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import socket
import stat
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

#: Errors that mean "no room": the end record is still written, in room made for it (see close).
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


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
        run_dir: directory to create (parents too); an existing run there is appended to
            (``probes.run_dir`` decides where a probe's run goes). Bytes and paths that are not
            valid UTF-8 work.
        meta: metadata fields; ``run_id``, ``name``, ``started_at``, ``host``, ``pid`` and
            ``argv`` are filled in when missing, ``schema`` always.
        flush_interval: seconds between background writes (the format promises <= 0.5).
        max_pending: events held in memory before ``write`` waits for the disk.
        block_timeout: longest a ``write`` waits for room; after that the event is dropped,
            counted, and reported once, so a stalled disk can never stall training.
        on_error: called once with a message when the log is disabled or drops events;
            defaults to printing one line on stderr.
        before_write: called by the writer thread each time it wakes, before it takes the
            batch (the probe hands over steps a stalled training loop still holds); an
            exception in it is reported once and it is not called again.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        meta: dict[str, Any] | None = None,
        *,
        flush_interval: float = 0.15,
        max_pending: int = 1_000_000,
        block_timeout: float = 1.0,
        on_error: Callable[[str], None] | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.run_dir = Path(os.fsdecode(run_dir))
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
        self._fd: int | None = None
        self._dir_fd: int | None = None
        self._no_room = False
        self._own_start = 0  # size of events.jsonl when this writer began: it never cuts below it
        self._wake_hook = before_write
        self._thread: threading.Thread | None = None
        try:
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
            self._open(safe_text(full_meta))
        except _Refused as exc:
            self._close_fds()
            self._disable(str(exc))
            return
        except Exception as exc:  # never raise into the training process
            self._close_fds()
            self._disable(f"cannot create run directory {self.run_dir}: {_describe(exc)}")
            return
        self._thread = threading.Thread(target=self._run, name="lrtui-runlog-writer", daemon=True)
        self._thread.start()
        _live_writers.add(self)

    def _open(self, meta: dict[str, Any]) -> None:
        """The directory's descriptor, then events.jsonl and meta.json, each without following a link."""
        path = os.fsencode(self.run_dir)
        os.makedirs(path, exist_ok=True)
        self._dir_fd = dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = os.open(EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, 0o666, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Refused(self._link_message(EVENTS_FILE)) from None
            raise
        self._fd = fd
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            raise _Refused(f"run log {self.run_dir / EVENTS_FILE} has other hard links (another file's data); "
                           "refusing to append to it")
        self._end_torn_line()
        self._own_start = os.fstat(fd).st_size if stat.S_ISREG(info.st_mode) else 0
        self._write_meta(meta)

    def _link_message(self, name: str) -> str:
        return f"{self.run_dir / name} is a symbolic link; refusing to write through it"

    def _write_meta(self, meta: dict[str, Any]) -> None:
        """meta.json by atomic rename of a new meta.json.tmp (a leftover one is replaced, a link refused)."""
        dfd = self._dir_fd
        tmp = META_FILE + ".tmp"
        data = encode_json(meta)
        for _ in range(2):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o666, dir_fd=dfd)
                break
            except FileExistsError:
                if stat.S_ISLNK(os.lstat(tmp, dir_fd=dfd).st_mode):
                    raise _Refused(self._link_message(tmp)) from None
                os.unlink(tmp, dir_fd=dfd)  # left by a writer killed mid-rename
        else:
            raise FileExistsError(errno.EEXIST, "meta.json.tmp keeps coming back")
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, META_FILE, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)  # never leave an empty or half meta.json.tmp behind
            except OSError:
                pass
            raise

    def rewrite_meta(self, meta: dict[str, Any]) -> bool:
        """Replace meta.json atomically (tmp + rename inside the run directory); False if it failed."""
        if self._dir_fd is None or self.error is not None:
            return False
        try:
            self._write_meta(safe_text(meta))
            return True
        except _Refused as exc:
            self._report(str(exc))
        except Exception as exc:
            self._report(f"cannot rewrite {self.run_dir / META_FILE}: {_describe(exc)}")
        return False

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
        if self._fd is None or self._forked:
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

    def flush_if_free(self, timeout: float) -> bool:
        """``flush`` unless this thread itself holds the writer's lock (a signal handler that
        interrupted ``write``): then waiting would never end, and it returns False at once."""
        if not self._mutex.acquire(timeout=min(timeout, 0.05)):
            return False
        self._mutex.release()
        return self.flush(timeout)

    def close(self, status: str = "finished", exception: BaseException | None = None, **fields: Any) -> None:
        """Write the end record, flush, and stop the writer thread. Safe to call twice.

        ``fields`` go into the end record (``signal="SIGTERM"`` for a terminated run)."""
        if self._closed or self._forked:
            return
        # Flush first, so events that turn out unencodable are in the dropped count.
        # A disk that did not take the events in 5 s gets no more time for the end record.
        drained = self.flush(timeout=max(5.0, self.block_timeout))
        end: dict[str, Any] = {"status": status, "events_dropped": self.dropped, **fields}
        if exception is not None:
            end["exception"] = type(exception).__name__
            end["message"] = str(exception)[:500]
        no_room = self._no_room
        if no_room:
            end["log_error"] = self.error
        else:
            self.write(KIND_END, None, **end)
            self.flush(timeout=max(5.0, self.block_timeout) if drained else 0.5)
        with self._lock:
            self._closed = True
            self._refusing = True
            self._lock.notify_all()
        if self._thread is not None:
            # The writer thread closes the file itself: closing it here while the thread is stuck
            # in a write to a hung disk would wait on the file's lock for as long as the disk.
            self._thread.join(timeout=5.0 if drained else 0.5)
            if no_room and not self._thread.is_alive():
                self._end_without_room(end)
                self._close_fds()
        _live_writers.discard(self)

    def _end_without_room(self, end: dict[str, Any]) -> None:
        """The end record of a log that ran out of room: appended if it fits now, else written over
        this writer's own last lines (the whole lines it replaces are added to the dropped count)."""
        fd, dfd = self._fd, self._dir_fd
        if fd is None or dfd is None:
            return
        try:
            size = os.fstat(fd).st_size
            read_fd = os.open(EVENTS_FILE, os.O_RDONLY | _OPEN_FLAGS, dir_fd=dfd)
            try:
                if os.fstat(read_fd).st_ino != os.fstat(fd).st_ino:
                    return  # the name now holds another file: leave it alone
                tail = os.pread(read_fd, min(size - self._own_start, 1 << 16), max(self._own_start, size - (1 << 16)))
            finally:
                os.close(read_fd)
            base = size - len(tail)
            torn = bool(tail) and not tail.endswith(b"\n")
            line = encode_event({"kind": KIND_END, "step": None, "time": _now(), **end})
            try:
                _write_all(fd, (b"\n" if torn else b"") + line)
                return
            except OSError as exc:
                if exc.errno not in NO_ROOM:
                    raise
                os.ftruncate(fd, size)  # whatever part of it went in
            # Cut whole lines (and the torn end) until the end record fits where they were.
            cut = len(tail)
            dropped = end["events_dropped"]
            while True:
                keep = tail.rfind(b"\n", 0, cut - 1) + 1 if cut > 0 else 0
                if tail[keep:cut].endswith(b"\n"):
                    dropped += 1
                cut = keep
                room = len(tail) - cut
                line = encode_event({"kind": KIND_END, "step": None, "time": _now(),
                                     **{**end, "events_dropped": dropped}})
                if room >= len(line) or cut == 0:
                    break
            if room < len(line):
                raise OSError(errno.ENOSPC, "no room even for the end record")
            os.ftruncate(fd, base + cut)
            _write_all(fd, line)
        except Exception as exc:
            self._report(f"run log {self.run_dir}: the end record could not be written ({_describe(exc)})")

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
            if self._wake_hook is not None and not self._closed:
                try:
                    self._wake_hook()
                except Exception as exc:
                    self._wake_hook = None
                    self._report(f"run log {self.run_dir}: {_describe(exc)} (steps wait for the training loop)")
            with self._lock:
                self._urgent = False
                batch, self._pending = self._pending, []
                self._in_flight = len(batch)
                closed = self._closed
            if self.error is None:
                if batch:
                    self._write_batch(batch)
                self._check_still_there()
            with self._lock:
                self._in_flight = 0
                self._stalled = False
                self._flushed.notify_all()
            if closed:
                if not self._no_room:
                    self._close_fds()
                return

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        data = self._encode(batch)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])  # type: ignore[arg-type]
            self.written += len(batch)
        except Exception as exc:
            lost = len(batch) - data.count(b"\n", 0, done)
            with self._lock:
                self.dropped += lost
            if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                self._no_room = True
            self._disable(f"cannot write run log {self.run_dir}: {_describe(exc)}")

    def _check_still_there(self) -> None:
        """A run directory deleted under a live run: said once, the log disabled."""
        try:
            info = os.fstat(self._fd)  # type: ignore[arg-type]
        except OSError:
            return
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 0:
            self._disable(f"run log {self.run_dir / EVENTS_FILE} was deleted (the run directory removed?)")

    def _close_fds(self) -> None:
        for name in ("_fd", "_dir_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _end_torn_line(self) -> None:
        """Before appending to an existing log, end a last line a crashed writer left unfinished.

        Otherwise the first new event would be glued to it and both would be lost as garbage.
        """
        fd = self._fd
        info = os.fstat(fd)  # type: ignore[arg-type]
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:  # a pipe, a device, a new log
            return
        read_fd = os.open(EVENTS_FILE, os.O_RDONLY | _OPEN_FLAGS, dir_fd=self._dir_fd)
        try:
            last = os.pread(read_fd, 1, info.st_size - 1)
        finally:
            os.close(read_fd)
        if last != b"\n":
            _write_all(fd, b"\n")  # type: ignore[arg-type]

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
            self.dropped += len(self._pending)
            self._pending = []
            self._flushed.notify_all()
        try:
            self.on_error(message + "; logging disabled, training continues")
        except Exception:
            pass


class _Refused(Exception):
    """A run file that must not be written (a link): the message says which, once."""


def _write_all(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


def safe_text(value: Any) -> Any:
    """``value`` with every string made valid UTF-8 (a path that is not: its bytes as ``\\xNN``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            try:
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:
                return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {safe_text(k): safe_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_text(v) for v in value]
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
