"""Events to numpy columns: one field's values to an array, blocks of step lines straight to
columns (the fast path), and chunks of columns joined."""

from __future__ import annotations

import itertools
import re
import typing
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from lrtui.runlog.format import STEP_FIELDS, STEP_LIST_FIELDS, StepLine
from lrtui.runlog.numbers import NON_FINITE_STRINGS, as_float, numbers_back

#: Columns of rows with no value travel with this prefix until ``RunData`` keeps them apart.
MISSING_PREFIX = "\0missing:"
#: Above this many names, a kind's columns are filled in one pass over its events.
_SPARSE_NAMES = 32
#: Most unknown fields a step line may add before the loader stops making a typed decoder for it.
_MAX_EXTRA_STEP_FIELDS = 32


def column(values: list[Any]) -> np.ndarray:
    """One field's values to an array: float64 when numeric (None -> NaN), 2-D for lists.

    Numbers, null and the three non-finite strings make a float column; any other string (or
    object) makes an object column that keeps the values as they are.
    """
    try:
        out = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        out = None
    if out is not None:
        if str not in set(map(type, values)):
            return out
        # numpy parses any numeric string; only the three non-finite ones are numbers here.
        if {v for v in values if v.__class__ is str} <= NON_FINITE_STRINGS:
            return out
    if any(v.__class__ is list for v in values):
        if all(v is None or v.__class__ is list for v in values):
            width = max((len(v) for v in values if v is not None), default=0)
            grid = np.full((len(values), max(width, 1)), np.nan)
            for i, v in enumerate(values):
                for j, x in enumerate(v or ()):
                    grid[i, j] = as_float(x)
            return grid
    objects = np.empty(len(values), dtype=object)
    objects[:] = [numbers_back(v) for v in values]
    return objects


def event_columns(group: list[dict[str, Any]], names: typing.Iterable[str]) -> dict[str, np.ndarray]:
    """Columns ``names`` of decoded events of one kind (a missing-rows mask where a value is
    absent or null, under ``MISSING_PREFIX``)."""
    names = list(names)
    lists: dict[str, list[Any]] = {}
    if len(names) > _SPARSE_NAMES:  # many names, each in few events: one pass over the events
        lists = {k: [None] * len(group) for k in names}
        for i, e in enumerate(group):
            for k, v in e.items():
                values = lists.get(k)
                if values is not None:
                    values[i] = v
    columns = {}
    for k in names:
        values = lists[k] if lists else list(map(dict.get, group, itertools.repeat(k)))
        columns[k] = column(values)
        if None in values:  # null or absent: no value (``RunData.missing``)
            columns[MISSING_PREFIX + k] = np.fromiter((v is None for v in values), bool, len(values))
    return columns


def concat(parts: list[np.ndarray | None], lengths: list[int]) -> np.ndarray:
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


def _rows_as_objects(col: np.ndarray) -> np.ndarray:
    if col.ndim == 1:
        return col
    out = np.empty(len(col), dtype=object)
    out[:] = [list(row) for row in col]
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


def step_columns(step_data: bytes, lines: int, only: tuple[str, ...] | None = None) -> dict[str, np.ndarray] | None:
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
            except OverflowError:  # an integer too large for a float: column() makes it +-inf
                pass
        if name in STEP_LIST_FIELDS:
            listed = list_column(values)
            if listed is not None:
                columns[name] = listed
                continue
        columns[name] = column(values)
    return columns


def list_column(values: list[Any]) -> np.ndarray | None:
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
        out = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    return out if out.ndim == 2 else None


__all__ = ["MISSING_PREFIX", "column", "concat", "event_columns", "list_column", "step_columns"]
