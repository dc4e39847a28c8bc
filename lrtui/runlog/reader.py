"""Read a run directory into numpy columns, whole (replay, advise) or a batch at a time (follow)."""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import time
import typing
from operator import attrgetter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import msgspec
import numpy as np

from lrtui.runlog.format import (
    EVENTS_FILE,
    KIND_END,
    KIND_STEP,
    META_FILE,
    STEP_FIELDS,
    STEP_LIST_FIELDS,
    TEXT_TO_NON_FINITE,
    RunFormatError,
    StepLine,
    decode_line,
    decode_lines,
    is_run_dir,
    read_meta,
    restore_non_finite,
)

#: Bytes read per chunk when loading; bounds peak memory whatever the file size.
CHUNK_BYTES = 4 << 20
#: A line longer than this is skipped as garbage rather than held in memory.
MAX_LINE_BYTES = 1 << 20
#: Seconds without an event after which a run with no end record and a live or unknown
#: process is reported stale.
STALE_AFTER = 60.0
#: Kinds kept as a list of dicts too (rare events whose text matters).
RECORD_KINDS = ("warning", "end", "metric", "action")
#: Columns of rows with no value travel with this prefix until ``RunData._add`` keeps them apart.
MISSING_PREFIX = "\0missing:"

#: Step lines as our writer starts them; other lines (other kinds, other writers, garbage) are
#: found by this pattern and decoded the generic way.
_STEP_PREFIX = b'{"kind":"step",'
_OTHER_LINE = re.compile(rb"\n(?!" + re.escape(_STEP_PREFIX) + rb")[^\n]*")
#: Most unknown fields a step line may add before the loader stops making a typed decoder for it.
_MAX_EXTRA_STEP_FIELDS = 32
_NON_FINITE_STRINGS = frozenset(TEXT_TO_NON_FINITE)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding millions of small objects.

    Decoding allocates containers that are never cyclic; without this, CPython runs full
    collections over them again and again, which doubles the decode time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _may_hold_long_line(data: bytes) -> bool:
    # A line longer than MAX_LINE_BYTES covers a whole aligned window of half that size, so a
    # window without a newline is the only case that needs a closer look.
    half = MAX_LINE_BYTES // 2
    for start in range(0, len(data) - half + 1, half):
        if data.find(b"\n", start, start + half) < 0:
            return True
    return False


class LineAssembler:
    """Cuts a stream of bytes into blocks of complete lines.

    A last line without its newline is still being written: it is held back until the newline
    comes. A line longer than ``MAX_LINE_BYTES`` is dropped (and counted) without being held.
    """

    def __init__(self) -> None:
        self.partial = b""
        self.skipping = False  # inside an over-long line: drop bytes until its newline

    def feed(self, block: bytes) -> tuple[bytes, int]:
        """Add bytes; return (complete lines, each ending in a newline; over-long lines dropped)."""
        skipped = 0
        if self.skipping:
            newline = block.find(b"\n")
            if newline < 0:
                return b"", 0
            block = block[newline + 1:]
            self.skipping = False
        data = self.partial + block if self.partial else block
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        data = data[:cut]
        if len(self.partial) > MAX_LINE_BYTES:
            self.partial = b""
            self.skipping = True
            skipped += 1
        if data and _may_hold_long_line(data):
            lines = data.split(b"\n")[:-1]
            keep = [ln for ln in lines if len(ln) <= MAX_LINE_BYTES]
            skipped += len(lines) - len(keep)
            data = b"\n".join(keep) + b"\n" if keep else b""
        return data, skipped


def iter_complete_blocks(f: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield (block of complete lines, over-long lines skipped) from a binary file, chunk by chunk."""
    assembler = LineAssembler()
    while True:
        block = f.read(chunk_bytes)
        if not block:
            return
        data, skipped = assembler.feed(block)
        if data or skipped:
            yield data, skipped


# -- columns --------------------------------------------------------------------------------


def _column(values: list[Any]) -> np.ndarray:
    """One field's values to an array: float64 when numeric (None -> NaN), 2-D for lists.

    Numbers, null and the three non-finite strings make a float column; any other string (or
    object) makes an object column that keeps the values as they are.
    """
    try:
        column = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        column = None
    if column is not None:
        if str not in set(map(type, values)):
            return column
        # numpy parses any numeric string; only the three non-finite ones are numbers here.
        if {v for v in values if v.__class__ is str} <= _NON_FINITE_STRINGS:
            return column
    if any(v.__class__ is list for v in values):
        if all(v is None or v.__class__ is list for v in values):
            width = max((len(v) for v in values if v is not None), default=0)
            out = np.full((len(values), max(width, 1)), np.nan)
            for i, v in enumerate(values):
                for j, x in enumerate(v or ()):
                    out[i, j] = _as_float(x)
            return out
    out = np.empty(len(values), dtype=object)
    out[:] = [_restored(v) for v in values]
    return out


def _restored(value: Any) -> Any:
    if value.__class__ is str:
        return TEXT_TO_NON_FINITE.get(value, value)
    if value.__class__ is list:
        return [_restored(v) for v in value]
    return value


def _as_float(x: Any) -> float:
    if x.__class__ is str:
        return TEXT_TO_NON_FINITE.get(x, float("nan"))
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def float_column(column: np.ndarray) -> np.ndarray:
    """A column as float64 whatever it holds: numbers as floats (an integer beyond the float
    range as ±inf), anything else NaN. A 2-D column (a list per event) stays 2-D. Readers of
    columns (the advisor, the app) use this so an object column never reaches arithmetic."""
    if column.dtype != object:
        return column.astype(np.float64, copy=False)
    out = np.full(column.shape, np.nan)
    flat, dest = column.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat):
        if v.__class__ is bool or not isinstance(v, (int, float)):
            continue
        try:
            dest[i] = float(v)
        except OverflowError:
            dest[i] = np.inf if v > 0 else -np.inf
    return out


def _concat(parts: list[np.ndarray | None], lengths: list[int]) -> np.ndarray:
    """Concatenate column chunks; a chunk missing the field contributes NaN (or None)."""
    present = [p for p in parts if p is not None]
    if len(present) == len(parts) == 1:
        return present[0]
    if any(p.dtype == object for p in present):
        filled = [p.astype(object) if p is not None else np.full(n, None, dtype=object)
                  for p, n in zip(parts, lengths)]
        if any(f.ndim == 2 for f in filled):
            filled = [_rows_as_objects(f) for f in filled]
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


def _rows_as_objects(column: np.ndarray) -> np.ndarray:
    if column.ndim == 1:
        return column
    out = np.empty(len(column), dtype=object)
    out[:] = [list(row) for row in column]
    return out


_step_decoders: dict[tuple[str, ...], msgspec.json.Decoder] = {}


def _step_decoder(extra: tuple[str, ...]) -> msgspec.json.Decoder:
    """A decoder for step lines with the schema's fields plus ``extra`` ones (of any type)."""
    decoder = _step_decoders.get(extra)
    if decoder is None:
        line_type: Any = StepLine
        if extra:
            line_type = msgspec.defstruct(
                "StepLineWithExtras",
                [(name, Any, None) for name in extra],
                bases=(StepLine,),
                forbid_unknown_fields=True,
                gc=False,
            )
        decoder = _step_decoders[extra] = msgspec.json.Decoder(list[line_type])
    return decoder


_UNKNOWN_FIELD = re.compile(r"unknown field `(.+?)`")
_projected_decoders: dict[tuple[str, ...], msgspec.json.Decoder] = {}


def _projected_decoder(fields: tuple[str, ...]) -> msgspec.json.Decoder:
    """A decoder for step lines that keeps only ``fields`` (schema fields) and skips the rest."""
    decoder = _projected_decoders.get(fields)
    if decoder is None:
        hints = typing.get_type_hints(StepLine, include_extras=True)
        line_type = msgspec.defstruct(
            "StepLineProjected",
            [("kind", hints["kind"]), ("step", hints["step"])]
            + [(name, hints[name], None) for name in fields if name not in ("kind", "step")],
            gc=False,
        )
        decoder = _projected_decoders[fields] = msgspec.json.Decoder(list[line_type])
    return decoder


def _step_columns(step_data: bytes, lines: int, only: tuple[str, ...] | None = None) -> dict[str, np.ndarray] | None:
    """Columns of a block of step lines, or None if any line is not a valid step event.

    Fields the schema does not know are learnt from the decoder's complaint and decoded too,
    so a writer that adds its own step fields keeps the fast path. With ``only`` (schema field
    names) every other field is skipped unread, which is what makes a projection cheaper.
    """
    extra: tuple[str, ...] = ()
    body = b"[" + step_data.rstrip(b"\n").replace(b"\n", b"\n,") + b"\n]"
    while True:
        try:
            rows = (_projected_decoder(only) if only is not None else _step_decoder(extra)).decode(body)
            break
        except msgspec.ValidationError as exc:
            if only is not None:
                return None
            found = _UNKNOWN_FIELD.search(str(exc))
            if found is None or len(extra) >= _MAX_EXTRA_STEP_FIELDS or found.group(1) in extra:
                return None
            extra = (*extra, found.group(1))
        except (msgspec.DecodeError, RecursionError):  # nested deeper than the decoder goes
            return None
    if len(rows) != lines:  # a line held more or less than one object
        return None
    columns: dict[str, np.ndarray] = {}
    names = (*STEP_FIELDS, *extra) if only is None else tuple(f for f in STEP_FIELDS if f == "step" or f in only)
    for name in names:
        if (name not in ("step", "time") or only is not None) and step_data.find(b'"' + name.encode() + b'":') < 0:
            continue  # no line has the field: no column (as when the generic way reads it)
        values = list(map(attrgetter(name), rows))
        if None in values and name not in STEP_LIST_FIELDS:
            columns[MISSING_PREFIX + name] = np.fromiter((v is None for v in values), bool, len(values))
        if name not in extra and name not in STEP_LIST_FIELDS:
            # The typed decoder let through only numbers, null and the non-finite strings.
            try:
                columns[name] = np.array(values, dtype=np.float64)
                continue
            except OverflowError:  # an integer too large for a float: _column makes it +-inf
                pass
        if name in STEP_LIST_FIELDS:
            column = _list_column(values)
            if column is not None:
                columns[name] = column
                continue
        columns[name] = _column(values)
    return columns


def _list_column(values: list[Any]) -> np.ndarray | None:
    """A list field's values, one list of numbers per line, as a 2-D float64 column; None when
    they do not make one (a line without the list, lists of different lengths, text)."""
    try:
        widths = set(map(len, values))
    except TypeError:  # null instead of a list
        return None
    if len(widths) != 1:
        return None
    width = widths.pop()
    try:
        if width:  # flattened first: several times faster than numpy walking the nested lists
            return np.fromiter(itertools.chain.from_iterable(values), np.float64, len(values) * width).reshape(-1, width)
        return np.empty((len(values), 0))
    except (ValueError, TypeError, OverflowError):  # null or a non-finite string inside a list
        pass
    try:
        column = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    return column if column.ndim == 2 else None


def _split_step_lines(data: bytes) -> tuple[bytes, int, list[bytes]]:
    """Split a block of complete lines into (step lines, their count, other lines)."""
    text = b"\n" + data
    others: list[bytes] = []
    pieces: list[bytes] = []
    start = 1
    for match in _OTHER_LINE.finditer(text):
        begin, end = match.span()
        if begin >= start:
            pieces.append(text[start:begin + 1])
        if end > begin + 1:
            others.append(text[begin + 1:end])
        start = end + 1
    if start < len(text):
        pieces.append(text[start:])
    step_data = b"".join(pieces) if len(pieces) != 1 else pieces[0]
    return step_data, step_data.count(b"\n"), others


class RunData:
    """Events of one run as numpy columns per kind, growable in batches.

    ``table("step")["loss"]`` is a float64 array aligned with ``table("step")["step"]``.
    Missing fields are NaN; list fields (a learning rate per param group) are 2-D; a field that
    holds text (other than the non-finite strings) is an object array.
    """

    def __init__(self) -> None:
        self._chunks: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._missing: dict[str, list[tuple[int, frozenset[str], dict[str, np.ndarray]]]] = {}
        self._missing_cache: dict[str, dict[str, np.ndarray]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {k: [] for k in RECORD_KINDS}
        self.count = 0
        self.last_time: float | None = None
        self.last_step: int | None = None

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Add decoded events (text non-finite values allowed) in file order."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            group = by_kind.get(e["kind"])
            if group is None:
                group = by_kind[e["kind"]] = []
            group.append(e)
        for kind, group in by_kind.items():
            names = dict.fromkeys(itertools.chain.from_iterable(group))
            names.pop("kind", None)
            columns = {}
            for k in names:
                values = list(map(dict.get, group, itertools.repeat(k)))
                columns[k] = _column(values)
                if None in values:  # null or absent: no value (``missing``)
                    columns[MISSING_PREFIX + k] = np.fromiter((v is None for v in values), bool, len(values))
            self._add(kind, len(group), columns)
            if kind in self.records:
                self.records[kind].extend(restore_non_finite(e) for e in group)
            last = group[-1]
            self._seen(last.get("time"), last.get("step"))

    def extend_block(self, data: bytes, step_fields: tuple[str, ...] | None = None) -> int:
        """Add a block of complete lines as read from ``events.jsonl``; returns garbage skipped.

        Step lines are decoded straight into columns (the fast path); other lines, or a block
        whose step lines do not all fit the schema, are decoded the generic way.
        """
        if not data:
            return 0
        step_data, step_lines, other_lines = _split_step_lines(data)
        columns = _step_columns(step_data, step_lines, step_fields) if step_lines else None
        if step_lines and columns is None:
            return self._extend_generic(data)
        events, skipped = decode_lines(other_lines)
        if columns is not None and any(e["kind"] == KIND_STEP for e in events):
            return self._extend_generic(data)  # step events the other way too: keep their order
        if columns is not None:
            self._add(KIND_STEP, step_lines, columns)
            if "time" in columns:
                self._seen(float(columns["time"][-1]), int(columns["step"][-1]))
            else:  # a projection without time: the block's last step line says when
                last = decode_line(step_data[step_data.rstrip(b"\n").rfind(b"\n") + 1 :].rstrip(b"\n"))
                self._seen(last.get("time") if last else None, int(columns["step"][-1]))
        self.extend(events)
        return skipped

    def _extend_generic(self, data: bytes) -> int:
        events, skipped = decode_lines(data.split(b"\n"))
        self.extend(events)
        return skipped

    def _add(self, kind: str, n: int, columns: dict[str, np.ndarray]) -> None:
        masks = {k[len(MISSING_PREFIX):]: columns.pop(k) for k in [k for k in columns if k.startswith(MISSING_PREFIX)]}
        self._missing.setdefault(kind, []).append((n, frozenset(columns), masks))
        self._missing_cache.pop(kind, None)
        chunks = self._chunks.setdefault(kind, [])
        chunks.append((n, columns))
        self.count += n
        self._cache.pop(kind, None)
        if len(chunks) > 64:  # keep concatenation amortized when following live
            self.table(kind)

    def _seen(self, t: Any, step: Any) -> None:
        if t.__class__ is float or t.__class__ is int:
            t = finite_float(t)
            if t is not None:
                self.last_time = t if self.last_time is None else max(self.last_time, t)
        if step.__class__ is int:
            self.last_step = step if self.last_step is None else max(self.last_step, step)

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
        table = {}
        for name in names:
            # Each field's chunks are let go as soon as that field is joined, so the peak is the
            # run plus one column, not the run twice.
            table[name] = _concat([cols.pop(name, None) for _, cols in chunks], lengths)
        for name in ("step", "time"):  # always float64, 1-D: whatever else a line put there is NaN
            col = table.get(name)
            if col is not None and (col.dtype == object or col.ndim != 1):
                table[name] = float_column(col) if col.ndim == 1 else np.full(len(col), np.nan)
        # The joined table becomes the one chunk (a copy of the dict: the next join pops from
        # it, and a caller may still hold this table).
        self._chunks[kind] = [(sum(lengths), dict(table))]
        self._cache[kind] = table
        return table

    def missing(self, kind: str) -> dict[str, np.ndarray]:
        """For each field of ``kind`` with rows of no value (``null``, absent, not a number in a
        numeric column), the mask of those rows, aligned with ``table(kind)``: a NaN there is no
        value, while a NaN elsewhere is a non-finite value (``"NaN"`` in the file)."""
        if kind in self._missing_cache:
            return self._missing_cache[kind]
        parts = self._missing.get(kind, [])
        names = set().union(*(present for _, present, _ in parts)) if parts else set()
        out: dict[str, np.ndarray] = {}
        for name in names:
            pieces = [masks.get(name, np.zeros(n, dtype=bool)) if name in present else np.ones(n, dtype=bool)
                      for n, present, masks in parts]
            mask = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
            if mask.any():
                out[name] = mask
        self._missing[kind] = [(sum(n for n, _, _ in parts), frozenset(names), out)] if parts else []
        self._missing_cache[kind] = out
        return out

    def merge(self, other: RunData) -> None:
        """Append the events of ``other``, read from the part of the file after this one's."""
        for kind in list(other._chunks):
            table, masks = other.table(kind), other.missing(kind)  # each joined into one piece
            n = len(next(iter(table.values()))) if table else 0
            self._add(kind, n, dict(table) | {MISSING_PREFIX + k: m for k, m in masks.items()})
        for kind, records in other.records.items():
            self.records.setdefault(kind, []).extend(records)
        self._seen(other.last_time, other.last_step)

    def compact(self) -> None:
        """Concatenate every kind's chunks now (what ``table`` would do on first use)."""
        for kind in list(self._chunks):
            self.table(kind)

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
    last = finite_float(last_time if last_time is not None else meta.get("started_at"))
    if last is not None and now - last > stale_after:
        return "stale"
    return "running"


def finite_float(value: Any) -> float | None:
    """A number as a finite float, else None (text, bool, NaN, infinities, 10**400)."""
    if value.__class__ is bool or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


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


#: A file at least this large is read by several processes when ``load_run`` is given ``workers``.
PARALLEL_MIN_BYTES = 64 << 20
#: Bytes per process at least (fewer processes for a smaller file).
PARALLEL_BYTES_PER_WORKER = 32 << 20


def load_run(
    path: str | os.PathLike[str], step_fields: Sequence[str] | None = None, workers: int | None = 1
) -> Run:
    """Load a whole run. Raises RunFormatError (one-line message) when it cannot be read.

    ``step_fields`` (schema field names of ``step`` events, e.g. the advisor's) keeps only those
    columns of the step table (``step`` always): a faster read for a reader that needs no more.
    Blocks with step lines outside the schema are read whole, as without it.

    ``workers``: processes that read a large ``events.jsonl`` side by side (``None``: one per
    core, at most 8). Each reads a range of whole lines; the result is the same as one reader's.
    If the processes cannot start, the file is read in this process.
    """
    only = tuple(dict.fromkeys(step_fields)) if step_fields is not None else None
    if only is not None and not set(only) <= set(STEP_FIELDS):
        raise ValueError(f"step_fields must be among {STEP_FIELDS}")
    run_dir = Path(path)
    meta = read_meta(run_dir)
    data = RunData()
    skipped = 0
    epath = events_path(run_dir)
    if epath.exists():
        try:
            size = epath.stat().st_size
            if workers is None:
                workers = min(os.cpu_count() or 1, 8)
            workers = max(1, min(workers, size // PARALLEL_BYTES_PER_WORKER))
            parts = _read_in_parallel(epath, size, workers, only) if size >= PARALLEL_MIN_BYTES and workers > 1 else None
            data, skipped = parts if parts is not None else _read_range(epath, 0, None, only)
            data.compact()
        except OSError as exc:
            raise RunFormatError(f"{epath}: cannot read: {exc.strerror or exc}") from None
    return Run(run_dir, meta, data, skipped)


class _Window:
    """The bytes of a file from where it is now up to ``stop`` (None: to the end)."""

    def __init__(self, f: Any, stop: int | None) -> None:
        self.f, self.stop = f, stop

    def read(self, n: int) -> bytes:
        if self.stop is None:
            return self.f.read(n)
        return self.f.read(max(0, min(n, self.stop - self.f.tell())))


def _read_range(epath: Path, start: int, stop: int | None, only: tuple[str, ...] | None) -> tuple[RunData, int]:
    """(events, lines skipped) of the lines in ``[start, stop)`` of a run log; ``start`` is a line's
    first byte and ``stop`` (None: the end) the byte after a newline."""
    data = RunData()
    skipped = 0
    with open(epath, "rb") as f, gc_paused():
        f.seek(start)
        for block, too_long in iter_complete_blocks(_Window(f, stop)):
            skipped += data.extend_block(block, only) + too_long
    return data, skipped


#: The calling process's range is this much larger than each helper's: it starts reading at once,
#: while a helper first starts Python (~0.2 s) and then sends its columns back.
OWN_SHARE = 1.4


def _cut_points(epath: Path, size: int, parts: int) -> list[int]:
    """Offsets that split the file into ``parts`` ranges of whole lines (starting with 0), the
    first ``OWN_SHARE`` times as large as the others."""
    cuts = [0]
    unit = size / (parts - 1 + OWN_SHARE)
    with open(epath, "rb") as f:
        for k in range(1, parts):
            at = max(int((OWN_SHARE + k - 1) * unit), cuts[-1])
            f.seek(at)
            while True:  # the byte after the next newline
                chunk = f.read(1 << 16)
                if not chunk:
                    return cuts
                newline = chunk.find(b"\n")
                if newline >= 0:
                    at += newline + 1
                    break
                at += len(chunk)
            if at >= size:
                break
            cuts.append(at)
    return cuts


def _read_in_parallel(
    epath: Path, size: int, workers: int, only: tuple[str, ...] | None
) -> tuple[RunData, int] | None:
    """The run log read by ``workers`` processes (this one included), or None if they cannot run.

    The helpers are plain ``python -c`` processes, not multiprocessing's: those import the
    caller's main module again, which re-runs any script without a ``__main__`` guard.
    """
    cuts = _cut_points(epath, size, workers)
    ranges = list(zip(cuts, [*cuts[1:], None]))
    if len(ranges) < 2:
        return None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str)))
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        for start, stop in ranges[1:]:
            job = pickle.dumps((str(epath), start, stop, only))
            helper = subprocess.Popen(
                [sys.executable, "-c", "from lrtui.runlog.reader import _range_helper; _range_helper()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            )
            helpers.append(helper)
            helper.stdin.write(job)  # type: ignore[union-attr]
            helper.stdin.close()  # type: ignore[union-attr]
        data, skipped = _read_range(epath, ranges[0][0], ranges[0][1], only)
        for helper in helpers:
            answer = helper.stdout.read()  # type: ignore[union-attr]
            if helper.wait() != 0:
                return None
            part, part_skipped = pickle.loads(answer)
            data.merge(part)
            skipped += part_skipped
        return data, skipped
    except Exception:  # no processes here (a sandbox, a limit), or a read failed: one reader will
        return None  # do, and report a real read error itself
    finally:
        for helper in helpers:
            if helper.poll() is None:
                helper.kill()
                helper.wait()


def _range_helper() -> None:
    """A helper process of ``_read_in_parallel``: a pickled job on stdin, the events on stdout."""
    path, start, stop, only = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(_read_range(Path(path), start, stop, only), protocol=pickle.HIGHEST_PROTOCOL))


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
    "finite_float",
    "float_column",
    "META_FILE",
    "LineAssembler",
    "Run",
    "RunData",
    "events_path",
    "find_runs",
    "gc_paused",
    "iter_complete_blocks",
    "load_run",
    "run_status",
]
