"""Read a run directory into numpy columns, whole (replay, advise) or a batch at a time (follow)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from lrtui.runlog.format import (
    EVENTS_FILE,
    KIND_END,
    META_FILE,
    RunFormatError,
    decode_lines,
    is_run_dir,
    read_meta,
    restore_non_finite,
)

#: Bytes read per chunk when loading; bounds peak memory whatever the file size.
CHUNK_BYTES = 8 << 20
#: A line longer than this is skipped as garbage rather than held in memory.
MAX_LINE_BYTES = 1 << 20
#: Seconds without an event after which a run with no end record and a live or unknown
#: process is reported stale.
STALE_AFTER = 60.0
#: Kinds kept as a list of dicts too (rare events whose text matters).
RECORD_KINDS = ("warning", "end", "metric")


def _column(values: list[Any]) -> np.ndarray:
    """One field's values to an array: float64 when numeric (None -> NaN), 2-D for lists."""
    try:
        return np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        pass
    if any(isinstance(v, list) for v in values):
        width = max((len(v) for v in values if isinstance(v, list)), default=0)
        out = np.full((len(values), max(width, 1)), np.nan)
        for i, v in enumerate(values):
            if isinstance(v, list):
                for j, x in enumerate(v):
                    out[i, j] = _as_float(x)
            else:
                out[i, 0] = _as_float(v)
        return out
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _concat(parts: list[np.ndarray], lengths: list[int]) -> np.ndarray:
    """Concatenate column chunks; a chunk missing the field contributes NaN (or None)."""
    present = [p for p in parts if p is not None]
    if any(p.dtype == object for p in present):
        filled = [p.astype(object) if p is not None else np.full(n, None, dtype=object)
                  for p, n in zip(parts, lengths)]
        return np.concatenate(filled)
    width = max((p.shape[1] if p.ndim == 2 else 1) for p in present)
    two_d = any(p.ndim == 2 for p in present)
    filled = []
    for p, n in zip(parts, lengths):
        if p is None:
            p = np.full((n, width) if two_d else n, np.nan)
        elif two_d and p.ndim == 1:
            p = np.concatenate([p[:, None], np.full((n, width - 1), np.nan)], axis=1)
        elif two_d and p.shape[1] < width:
            p = np.concatenate([p, np.full((n, width - p.shape[1]), np.nan)], axis=1)
        filled.append(p)
    return np.concatenate(filled)


class RunData:
    """Events of one run as numpy columns per kind, growable in batches.

    ``table("step")["loss"]`` is a float64 array aligned with ``table("step")["step"]``.
    Missing fields are NaN; list fields (a learning rate per param group) are 2-D.
    """

    def __init__(self) -> None:
        self._chunks: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {k: [] for k in RECORD_KINDS}
        self.count = 0
        self.last_time: float | None = None
        self.last_step: int | None = None

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Add decoded events (text non-finite values allowed) in file order."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            by_kind.setdefault(e["kind"], []).append(e)
            self.count += 1
        for kind, group in by_kind.items():
            keys: dict[str, None] = {}
            for e in group:
                keys.update(dict.fromkeys(e))
            keys.pop("kind", None)
            cols = {k: _column([e.get(k) for e in group]) for k in keys}
            chunks = self._chunks.setdefault(kind, [])
            chunks.append((len(group), cols))
            self._cache.pop(kind, None)
            if len(chunks) > 64:  # keep concatenation amortized when following live
                self._chunks[kind] = [(sum(n for n, _ in chunks), self.table(kind))]
            if kind in self.records:
                self.records[kind].extend(restore_non_finite(e) for e in group)
            last = group[-1]
            t = last.get("time")
            if isinstance(t, (int, float)):
                self.last_time = t if self.last_time is None else max(self.last_time, t)
            if isinstance(last.get("step"), int):
                self.last_step = last["step"] if self.last_step is None else max(self.last_step, last["step"])

    def kinds(self) -> list[str]:
        """Kinds that have at least one event."""
        return list(self._chunks)

    def table(self, kind: str) -> dict[str, np.ndarray]:
        """All fields of ``kind`` as columns of equal length (empty dict when none)."""
        if kind in self._cache:
            return self._cache[kind]
        chunks = self._chunks.get(kind)
        if not chunks:
            return {}
        names: dict[str, None] = {}
        for _, cols in chunks:
            names.update(dict.fromkeys(cols))
        lengths = [n for n, _ in chunks]
        table = {name: _concat([cols.get(name) for _, cols in chunks], lengths) for name in names}
        self._cache[kind] = table
        return table

    def __len__(self) -> int:
        return self.count


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
        ends = self.data.records[KIND_END]
        return ends[-1] if ends else None

    def status(self, now: float | None = None) -> str:
        return run_status(self.meta, self.end, self.data.last_time, now)


def run_status(
    meta: dict[str, Any],
    end: dict[str, Any] | None,
    last_time: float | None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> str:
    """``finished`` or ``failed`` (end record), ``crashed`` (its process is gone without one),
    ``stale`` (silent for ``stale_after`` s), else ``running``."""
    if end is not None:
        return "failed" if end.get("status") == "failed" else "finished"
    pid = meta.get("pid")
    if isinstance(pid, int) and pid > 0 and meta.get("host") == socket.gethostname():
        if not _pid_alive(pid):
            return "crashed"
    now = time.time() if now is None else now
    last = last_time if last_time is not None else meta.get("started_at")
    if isinstance(last, (int, float)) and now - last > stale_after:
        return "stale"
    return "running"


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


def iter_complete_lines(f: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[list[bytes], int]]:
    """Yield (complete lines, skipped over-long lines) from a binary file, chunk by chunk.

    A last line without its newline is still being written: it is not yielded.
    """
    tail = b""
    skipping = False  # inside an over-long line: drop bytes until its newline
    while True:
        block = f.read(chunk_bytes)
        if not block:
            return
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        skipped = 0
        if skipping and lines:
            lines.pop(0)
            skipping = False
        if len(tail) > MAX_LINE_BYTES:
            tail = b""
            skipping = True
            skipped += 1
        long_ = [ln for ln in lines if len(ln) > MAX_LINE_BYTES]
        if long_:
            skipped += len(long_)
            lines = [ln for ln in lines if len(ln) <= MAX_LINE_BYTES]
        yield lines, skipped


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a whole run. Raises RunFormatError (one-line message) when it cannot be read."""
    run_dir = Path(path)
    meta = read_meta(run_dir)
    data = RunData()
    skipped = 0
    epath = events_path(run_dir)
    if epath.exists():
        try:
            with open(epath, "rb") as f:
                for lines, too_long in iter_complete_lines(f):
                    events, bad = decode_lines(lines)
                    data.extend(events)
                    skipped += bad + too_long
        except OSError as exc:
            raise RunFormatError(f"{epath}: cannot read: {exc.strerror or exc}") from None
    return Run(run_dir, meta, data, skipped)


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


__all__ = [
    "META_FILE",
    "Run",
    "RunData",
    "events_path",
    "find_runs",
    "iter_complete_lines",
    "load_run",
    "run_status",
]
