"""Which directory a run goes to: one writer per run directory, a new run never lands on an old one.

``Probe(model, optimizer, "runs/my-run")`` claims the directory by taking an exclusive
``fcntl.flock`` on ``runs/my-run/lock`` (kept open for the process's life, so the OS releases it
when the process dies: a crashed run never blocks the next one). A directory that already holds a
run (a ``meta.json`` or a non-empty ``events.jsonl``) or whose lock a live process holds is not
written to: the new run goes to the next free sibling ``my-run-2``, ``my-run-3``, ... and one line
on stderr says so. ``resume=True`` continues the run in the directory on purpose (a restart from a
checkpoint): same ``run_id``, and the probe appends a ``resume`` event (docs/run-format.md).

This module never imports torch; nothing here writes into a directory it did not claim.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from lrtui.runlog.format import EVENTS_FILE, KIND_STEP, LOCK_FILE, META_FILE
from lrtui.runlog.run import flock_modes
#: Siblings tried before giving up (``name-2`` ... ``name-999``).
MAX_SIBLINGS = 999
#: Bytes read from the end of ``events.jsonl`` at a time when looking for the last step.
TAIL_CHUNK = 1 << 16
#: How long a claim waits out a shared lock: a reader (``lrtui``) holds one for microseconds.
READER_WAIT_S = 1.0

log = logging.getLogger("lrtui.probe")
_decoder = msgspec.json.Decoder()


class NotClaimed(Exception):
    """No directory could be claimed (every sibling taken, or the place cannot be written)."""


@dataclass
class Claim:
    """A run directory this process holds; ``lock_fd`` stays open as long as the run is written."""

    path: Path
    lock_fd: int | None
    resumed: bool = False
    #: The resumed run's ``meta.json`` (None for a new run).
    meta: dict[str, Any] | None = None
    #: The run's step number of this process's first optimizer step.
    start_step: int = 0
    #: What was said on stderr about the choice (None when the directory asked for was used).
    note: str | None = None

    def release(self) -> None:
        """Give the directory up (the run is closed). The lock file stays: it is harmless."""
        if self.lock_fd is not None:
            try:
                os.close(self.lock_fd)
            except OSError:
                pass
            self.lock_fd = None


def claim_run_dir(run_dir: str | os.PathLike[str] | bytes, *, resume: bool = False,
                  start_step: int | None = None) -> Claim:
    """Claim ``run_dir`` (or its next free sibling) for this process; see the module doc.

    Raises ``NotClaimed`` with a one-line reason when nothing can be claimed; the caller
    disables the log and says so (the training goes on).
    """
    if start_step is not None and (isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0):
        raise ValueError(f"start_step must be an integer >= 0, not {start_step!r}")
    wanted = Path(os.fsdecode(run_dir))
    reason = ""
    for n in range(1, MAX_SIBLINGS + 1):
        path = wanted if n == 1 else wanted.with_name(f"{wanted.name}-{n}")
        fd, busy = _lock(path)
        if fd is None:
            reason = reason or busy
            continue
        holds_run = _holds_run(path)
        if not holds_run:
            note = None if n == 1 else f"{wanted} {reason}; this run goes to {path}"
            return Claim(path, fd, start_step=start_step or 0, note=note)
        if resume and n == 1:
            meta, why = _resumable_meta(path)
            if meta is not None:
                first = start_step if start_step is not None else _next_step(path)
                return Claim(path, fd, resumed=True, meta=meta, start_step=first)
            reason = f"cannot be resumed ({why})"
        else:
            reason = reason or "already holds a run (resume=True continues it)"
        os.close(fd)
    raise NotClaimed(f"{wanted}: no free run directory among {wanted.name}-2 ... -{MAX_SIBLINGS}")


def _lock(path: Path) -> tuple[int | None, str]:
    """(the open lock file, "") or (None, why the directory cannot be had)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(os.fsencode(path / LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, f"has a symbolic link as its {LOCK_FILE} file (not followed)"
        if isinstance(exc, FileExistsError):
            return None, "is a file, not a directory"
        raise NotClaimed(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None, f"has a {LOCK_FILE} that is not a regular file"
        _take_exclusive(fd)
    except BlockingIOError:
        os.close(fd)
        return None, "is being written by another live process"
    except OSError:  # a file system without flock (some network mounts): the run goes on unlocked
        pass
    return fd, ""


def _take_exclusive(fd: int) -> None:
    """``flock(LOCK_EX | LOCK_NB)``, waiting out shared holders: ``lrtui`` (``writer_alive``) may
    hold a shared lock on the file for an instant while it looks whether a writer is alive, and a
    run resumed at that instant must not be sent to a sibling. An exclusive holder (a live
    writer) fails at once; so does any holder after ``READER_WAIT_S``."""
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            modes = flock_modes(os.fstat(fd).st_ino)
            now = time.monotonic()
            deadline = now + READER_WAIT_S if deadline is None else deadline
            if (modes is not None and b"WRITE" in modes) or now >= deadline:
                raise
            time.sleep(0.002)


def _holds_run(path: Path) -> bool:
    """A ``meta.json`` (of any kind) or a non-empty regular ``events.jsonl``. A link planted as
    ``events.jsonl`` is not a run: the writer refuses it (said once, the log disabled)."""
    for name in (META_FILE, EVENTS_FILE):
        try:
            info = os.lstat(os.fsencode(path / name))
        except FileNotFoundError:
            continue
        except OSError:
            return True
        if name == META_FILE or (stat.S_ISREG(info.st_mode) and info.st_size > 0):
            return True
    return False


def _resumable_meta(path: Path) -> tuple[dict[str, Any] | None, str]:
    meta_path = os.fsencode(path / META_FILE)
    try:
        fd = os.open(meta_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, f"no {META_FILE}"
    except OSError as exc:
        return None, f"{META_FILE}: {exc.strerror or exc}"
    try:
        with os.fdopen(fd, "rb") as f:
            meta = _decoder.decode(f.read())
    except (OSError, msgspec.DecodeError, ValueError, RecursionError):
        return None, f"{META_FILE} is not valid JSON"
    if not isinstance(meta, dict) or not isinstance(meta.get("run_id"), str):
        return None, f"{META_FILE} has no run_id"
    return meta, ""


def _next_step(path: Path) -> int:
    """The last logged step + 1 (0 when the log has no step event), read from the end backwards."""
    try:
        fd = os.open(os.fsencode(path / EVENTS_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        end = os.fstat(fd).st_size
        carry = b""
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            block = os.pread(fd, end - start, start) + carry
            lines = block.split(b"\n")
            carry = lines[0] if start > 0 else b""
            for line in reversed(lines[1:] if start > 0 else lines):
                step = _step_of(line)
                if step is not None:
                    return step + 1
            end = start
        return 0
    except OSError:
        return 0
    finally:
        os.close(fd)


def _step_of(line: bytes) -> int | None:
    if b'"step"' not in line:
        return None
    try:
        event = _decoder.decode(line)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if isinstance(event, dict) and event.get("kind") == KIND_STEP:
        step = event.get("step")
        if step.__class__ is int and step >= 0:
            return int(step)
    return None


def say(message: str) -> None:
    """One line on stderr (the ``lrtui.probe`` logger), never raising."""
    try:
        log.warning("lrtui probe: %s", message)
    except Exception:
        pass
