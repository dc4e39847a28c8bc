"""A loaded run (``Run``), the status of a run (``run_status``: is its writer alive?), and where
a run's files are (``events_path``, ``find_runs``)."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from lrtui.runlog.data import RunData
from lrtui.runlog.format import EVENTS_FILE, KIND_END, LOCK_FILE, RunFormatError, is_run_dir
from lrtui.runlog.numbers import finite_float

#: Seconds without an event after which a run with no end record and a live or unknown
#: process is reported stale.
STALE_AFTER = 60.0
#: What an end record's ``status`` may say; anything else reads as ``finished``.
END_STATUSES = ("finished", "failed", "terminated")
#: The statuses of a run that has ended.
ENDED = (*END_STATUSES, "crashed")
PROC_LOCKS = "/proc/locks"


class Run:
    """A loaded run: its metadata, its events as columns, and how many lines were skipped."""

    def __init__(self, path: Path, meta: dict[str, Any], data: RunData, skipped: int) -> None:
        self.path = path
        self.meta = meta
        self.data = data
        self.skipped_lines = skipped

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    def table(self, kind: str) -> dict[str, np.ndarray]:
        return self.data.table(kind)

    def records(self, kind: str) -> list[dict[str, Any]]:
        return self.data.records.get(kind, [])

    @property
    def end(self) -> dict[str, Any] | None:
        """The end record that counts: the last one, unless a resume came after it."""
        ends = self.data.records[KIND_END]
        return ends[-1] if ends else None

    def status(self, now: float | None = None) -> str:
        return run_status(self.meta, self.end, self.data.last_time, now, run_dir=self.path)


def planned_lr(meta: dict[str, Any] | None) -> float | None:
    """The initial LR the run's metadata states for param group 0: what a sweep is indexed by.

    Under a schedule that starts low, that is the LR the schedule rises to, not the group's
    ``lr`` at the probe's creation (a warm-up's first value, often 0): a OneCycleLR's
    ``max_lr``, else a torch scheduler's ``initial_lr`` (its base LR), else ``lr``.
    """
    try:
        group = meta["optimizer"]["param_groups"][0]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(group, dict):
        return None
    for key in ("max_lr", "initial_lr", "lr"):
        value = finite_float(group.get(key))
        if value is not None:
            return value
    return None


def run_status(
    meta: dict[str, Any],
    end: dict[str, Any] | None,
    last_time: float | None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
    *,
    run_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The status of a run (docs/run-format.md, *Status of a run*).

    ``finished``, ``failed`` or ``terminated`` (its end record says so); with no end record,
    ``running`` while a live process holds the run's ``lock`` (``stale`` when it has been silent
    for ``stale_after`` s), ``crashed`` once none does. A run without a lock file (a writer of
    its own) is ``crashed`` when ``meta.host`` is this host and no live process has ``meta.pid``,
    else ``running`` or ``stale``.
    """
    if end is not None:
        status = end.get("status")
        return status if status in END_STATUSES else "finished"
    alive = writer_alive(run_dir, meta) if run_dir is not None else None
    if alive is False:
        return "crashed"
    if alive is None:
        pid = meta.get("pid")
        if isinstance(pid, int) and pid > 0 and meta.get("host") == socket.gethostname() and not _pid_alive(pid):
            return "crashed"
    now = time.time() if now is None else now
    last = finite_float(last_time if last_time is not None else meta.get("started_at"))
    if last is not None and now - last > stale_after:
        return "stale"
    return "running"


def writer_alive(run_dir: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> bool | None:
    """True while a live process holds the run's ``lock``, False when none does, None when the
    run has no lock file (or it cannot be told).

    Linux lists every held ``flock`` in ``/proc/locks``: a look there takes no lock, so it never
    gets in the way of a writer claiming the directory at that moment. Where the lock is not
    listed and the writer may be out of sight (another host, or another PID namespace whose
    locks ``/proc/locks`` does not show: ``meta.host`` is not this host), and where there is no
    ``/proc/locks``, a shared non-blocking ``flock`` is tried and let go at once.
    """
    try:
        fd = os.open(os.fsencode(Path(run_dir) / LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        listed = _listed_in_proc_locks(info.st_ino)
        if listed:
            return True
        if listed is False and isinstance(meta, dict) and meta.get("host") == socket.gethostname():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no flock on this file system
            return None if listed is None else False
        return False
    finally:
        os.close(fd)  # lets go of the shared lock too


def _listed_in_proc_locks(inode: int) -> bool | None:
    """Whether a ``flock`` on a file with this inode number is held (``/proc/locks``), None when
    there is no ``/proc/locks`` to read."""
    modes = flock_modes(inode)
    return None if modes is None else bool(modes)


def flock_modes(inode: int) -> set[bytes] | None:
    """The modes (``b"READ"`` for a shared lock, ``b"WRITE"`` for an exclusive one) in which
    ``flock`` locks on a file with this inode number are held, from ``/proc/locks``; None when
    there is no ``/proc/locks`` to read. Processes waiting for a lock are not counted."""
    try:
        with open(PROC_LOCKS, "rb") as f:
            text = f.read()
    except OSError:
        return None
    needle = b":" + str(inode).encode()
    modes: set[bytes] = set()
    for line in text.splitlines():
        fields = line.split()
        if b"->" in fields[1:2]:  # a process waiting for a lock, not holding one
            continue
        if b"FLOCK" in fields and any(f.endswith(needle) and f.count(b":") == 2 for f in fields):
            modes.update(m for m in (b"READ", b"WRITE") if m in fields)
    return modes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def events_path(run_dir: Path) -> Path:
    """``events.jsonl`` of a run, refusing a link that leads outside the run directory."""
    path = run_dir / EVENTS_FILE
    real_dir = os.path.realpath(run_dir)
    real = os.path.realpath(path)
    if os.path.commonpath([real_dir, real]) != real_dir:
        raise RunFormatError(f"{path}: points outside the run directory; refusing to follow it")
    if path.exists() and not path.is_file():
        raise RunFormatError(f"{path}: not a regular file")
    return path


def find_runs(path: str | os.PathLike[str]) -> list[Path]:
    """The run at ``path``, or the runs directly inside it (a sweep), sorted by name."""
    root = Path(path)
    if is_run_dir(root):
        return [root]
    if not root.is_dir():
        return []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    return [p for p in children if is_run_dir(p)]


__all__ = ["ENDED", "END_STATUSES", "STALE_AFTER", "Run", "events_path", "find_runs", "planned_lr", "run_status", "writer_alive"]
