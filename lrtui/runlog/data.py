"""``RunData``: the events of one run as numpy columns per kind, grown a block at a time, with
the readers' rules of a resumed run and a cap on columns per kind."""

from __future__ import annotations

import itertools
from typing import Any, Iterable

import numpy as np

from lrtui.runlog.columns import MISSING_PREFIX, concat, event_columns, step_columns
from lrtui.runlog.format import (
    KIND_ACTION,
    KIND_ACTIVATIONS,
    KIND_END,
    KIND_METRIC,
    KIND_OVERHEAD,
    KIND_RESUME,
    KIND_SHARPNESS,
    KIND_STEP,
    decode_line,
    decode_lines,
)
from lrtui.runlog.lines import cut_at_resumes, resume_step, split_step_lines
from lrtui.runlog.numbers import finite_float, float_column, restore_non_finite

#: Kinds kept as a list of dicts too (rare events whose text matters).
RECORD_KINDS = ("warning", "end", "metric", "action")
#: Kinds whose events at steps >= K a ``resume`` event with step K replaces (docs/run-format.md).
REPLACED_KINDS = (KIND_STEP, KIND_SHARPNESS, KIND_ACTIVATIONS, KIND_METRIC, KIND_OVERHEAD, KIND_ACTION)
#: Most fields of one kind kept as columns: the first this many distinct names in file order.
#: Later names are not made columns (a ``metric`` event's fields all stay in ``records``); they
#: are counted in ``RunData.dropped_fields``. Bounds time and memory by events x this, whatever
#: the number of names a log holds.
MAX_COLUMNS = 256


class RunData:
    """Events of one run as numpy columns per kind, growable in batches.

    ``table("step")["loss"]`` is a float64 array aligned with ``table("step")["step"]``.
    Missing fields are NaN; list fields (a learning rate per param group) are 2-D; a field that
    holds text (other than the non-finite strings) is an object array.

    A ``resume`` event with step K, taken in file order, first drops every event of
    ``REPLACED_KINDS`` at a step >= K and every ``end`` record taken so far: the steps logged
    again replace the earlier ones, and an end record before a resume does not end the run.
    """

    def __init__(self) -> None:
        self._chunks: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._missing: dict[str, list[tuple[int, frozenset[str], dict[str, np.ndarray]]]] = {}
        self._missing_cache: dict[str, dict[str, np.ndarray]] = {}
        self._names: dict[str, dict[str, None]] = {}  # kind -> the fields kept as columns
        self._dropped: dict[str, set[str]] = {}  # kind -> the fields beyond MAX_COLUMNS
        self.records: dict[str, list[dict[str, Any]]] = {k: [] for k in RECORD_KINDS}
        self.count = 0
        self.last_time: float | None = None
        self.last_step: int | None = None
        #: The step K of each resume taken, in file order.
        self.resumes: list[int] = []

    # -- taking events -------------------------------------------------------------------------

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Add decoded events (text non-finite values allowed) in file order."""
        batch: list[dict[str, Any]] = []
        for e in events:
            k = resume_step(e)
            if k is not None:
                self._extend_events(batch)
                batch = []
                self.resume(k)
            batch.append(e)
        self._extend_events(batch)

    def _extend_events(self, events: list[dict[str, Any]]) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            group = by_kind.get(e["kind"])
            if group is None:
                group = by_kind[e["kind"]] = []
            group.append(e)
        for kind, group in by_kind.items():
            names = dict.fromkeys(itertools.chain.from_iterable(group))
            names.pop("kind", None)
            self._add(kind, len(group), event_columns(group, self._kept(kind, names)))
            if kind in self.records:
                self.records[kind].extend(restore_non_finite(e) for e in group)
            last = group[-1]
            self._seen(last.get("time"), last.get("step") if kind != KIND_RESUME else None)

    def extend_block(self, data: bytes, step_fields: tuple[str, ...] | None = None) -> int:
        """Add a block of complete lines as read from ``events.jsonl``; returns garbage skipped.

        Step lines are decoded straight into columns (the fast path); other lines, or a block
        whose step lines do not all fit the schema, are decoded the generic way. A block with
        ``resume`` lines is taken piece by piece (``lines.cut_at_resumes``).
        """
        if not data:
            return 0
        pieces = cut_at_resumes(data)
        if len(pieces) > 1 or pieces[0][0] is not None:
            skipped = 0
            for k, piece in pieces:
                if k is not None:
                    self.resume(k)
                skipped += self._extend_block(piece, step_fields)
            return skipped
        return self._extend_block(data, step_fields)

    def _extend_block(self, data: bytes, step_fields: tuple[str, ...] | None) -> int:
        if not data:
            return 0
        step_data, step_lines, other_lines = split_step_lines(data)
        columns = step_columns(step_data, step_lines, step_fields) if step_lines else None
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
        self._extend_events(events)
        return skipped

    def _extend_generic(self, data: bytes) -> int:
        events, skipped = decode_lines(data.split(b"\n"))
        self._extend_events(events)
        return skipped

    def _kept(self, kind: str, names: Iterable[str]) -> list[str]:
        """The fields of ``names`` kept as columns of ``kind`` (new ones while there is room)."""
        kept = self._names.setdefault(kind, {})
        out = []
        for name in names:
            if name in kept:
                out.append(name)
            elif len(kept) < MAX_COLUMNS:
                kept[name] = None
                out.append(name)
            else:
                self._dropped.setdefault(kind, set()).add(name)
        return out

    def _add(self, kind: str, n: int, columns: dict[str, np.ndarray]) -> None:
        masks = {k[len(MISSING_PREFIX):]: columns.pop(k) for k in [k for k in columns if k.startswith(MISSING_PREFIX)]}
        kept = self._kept(kind, list(columns))
        if len(kept) < len(columns):  # the fast path's fields, beyond the cap
            columns = {k: columns[k] for k in kept}
            masks = {k: m for k, m in masks.items() if k in columns}
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

    # -- a resumed run --------------------------------------------------------------------------

    def resume(self, k: int) -> None:
        """Take a ``resume`` event with step ``k``: drop the events it replaces (see the class doc)."""
        self.resumes.append(k)
        for kind in (*REPLACED_KINDS, KIND_END):
            table = self.table(kind)
            if not table:
                continue
            steps = table.get("step")
            n = len(next(iter(table.values())))
            keep = np.zeros(n, dtype=bool) if kind == KIND_END or steps is None else ~(steps >= k)
            if keep.all():
                continue
            masks = self.missing(kind)
            kept = int(keep.sum())
            self._chunks[kind] = [(kept, {name: col[keep] for name, col in table.items()})]
            self._missing[kind] = [(kept, frozenset(table), {name: m[keep] for name, m in masks.items()})]
            self._cache.pop(kind, None)
            self._missing_cache.pop(kind, None)
            self.count -= n - kept
            if kind in self.records:
                self.records[kind] = [] if kind == KIND_END else [
                    r for r in self.records[kind] if not (r.get("step").__class__ is int and r["step"] >= k)]
        self.last_step = None
        for kind in self._chunks:
            steps = self.table(kind).get("step")
            if steps is not None and kind != KIND_RESUME:
                finite = steps[np.isfinite(steps)]
                if finite.size:
                    top = int(finite.max())
                    self.last_step = top if self.last_step is None else max(self.last_step, top)

    # -- reading --------------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """Kinds that have at least one event."""
        return [k for k, chunks in self._chunks.items() if any(n for n, _ in chunks)]

    @property
    def dropped_fields(self) -> dict[str, int]:
        """For each kind with fields beyond ``MAX_COLUMNS``, how many distinct ones were not made
        columns."""
        return {kind: len(names) for kind, names in self._dropped.items()}

    def table(self, kind: str) -> dict[str, np.ndarray]:
        """All fields of ``kind`` as columns of equal length (empty dict when none)."""
        if kind in self._cache:
            return self._cache[kind]
        chunks = self._chunks.get(kind)
        if not chunks or not any(n for n, _ in chunks):
            return {}
        names: dict[str, None] = {}
        for _, cols in chunks:
            names.update(dict.fromkeys(cols))
        lengths = [n for n, _ in chunks]
        table = {}
        for name in names:
            # Each field's chunks are let go as soon as that field is joined, so the peak is the
            # run plus one column, not the run twice.
            table[name] = concat([cols.pop(name, None) for _, cols in chunks], lengths)
        for name in ("step", "time"):  # float64, 1-D: whatever else a line put there is NaN
            col = table.get(name)
            if col is None and name == "step":  # always there (a valid event may leave out a null step)
                table[name] = np.full(sum(lengths), np.nan)
            elif col is not None and (col.dtype == object or col.ndim != 1):
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

    def compact(self) -> None:
        """Concatenate every kind's chunks now (what ``table`` would do on first use)."""
        for kind in list(self._chunks):
            self.table(kind)

    def __len__(self) -> int:
        return self.count


__all__ = ["MAX_COLUMNS", "RECORD_KINDS", "REPLACED_KINDS", "RunData"]
