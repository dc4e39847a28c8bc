"""The run-directory format: file names, schema version, event kinds, and line encoding.

This module is the one home of the contract between the training process (writer) and every
reader. ``docs/run-format.md`` describes the same thing for people who write or read runs
without our code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec

from lrtui.runlog.numbers import NON_FINITE_TO_TEXT, numbers_back, restore_non_finite

#: Version written into ``meta.json``. A reader accepts any minor version of its own major.
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1

META_FILE = "meta.json"
EVENTS_FILE = "events.jsonl"
#: Empty; the writing process holds an exclusive ``flock`` on it for its life (one writer per run).
LOCK_FILE = "lock"

#: Event kinds of schema 1. Readers keep events of kinds they do not know (a newer minor
#: version may add some) but nothing in lrtui interprets them.
KIND_STEP = "step"
KIND_SHARPNESS = "sharpness"
KIND_ACTIVATIONS = "activations"
KIND_METRIC = "metric"
KIND_SYSTEM = "system"
KIND_OVERHEAD = "overhead"
KIND_WARNING = "warning"
KIND_ACTION = "action"
KIND_END = "end"
KIND_RESUME = "resume"
KINDS = (
    KIND_STEP,
    KIND_SHARPNESS,
    KIND_ACTIVATIONS,
    KIND_METRIC,
    KIND_SYSTEM,
    KIND_OVERHEAD,
    KIND_WARNING,
    KIND_ACTION,
    KIND_END,
    KIND_RESUME,
)
#: Field names every event carries; user metrics may not use them.
RESERVED_FIELDS = ("kind", "step", "time")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

#: A number in a schema-1 numeric field: a float, one of the three non-finite strings, or null.
NonFiniteText = Literal["NaN", "Infinity", "-Infinity"]
Number = Union[float, NonFiniteText, None]


class StepLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``step`` event with exactly the fields schema 1.0 gives it (see docs/run-format.md).

    The loader decodes step lines, the bulk of every run, straight into this type: one C call per
    block and no per-event Python work. A line that does not fit it (an unknown field, a string
    where a number belongs) is decoded the generic way instead, so nothing is lost.
    """

    kind: Literal["step"]
    step: Annotated[int, msgspec.Meta(ge=0)]
    time: float
    loss: Number = None
    grad_norm: Number = None
    update_norm: Number = None
    weight_norm: Number = None
    lr: Union[list[Number], None] = None
    effective_lr: Union[list[Number], None] = None
    skipped: Union[bool, None] = None  # a GradScaler skipped this step (inf/NaN gradients)


#: Fields of a step event besides ``kind``, in the order the writer puts them.
STEP_FIELDS = tuple(f for f in StepLine.__struct_fields__ if f != "kind")
#: Step fields that hold one value per param group.
STEP_LIST_FIELDS = ("lr", "effective_lr")


class RunFormatError(Exception):
    """A run directory that cannot be read: missing, not a run, or a newer schema."""


def to_json_value(value: Any) -> Any:
    """Any value as something strict JSON can hold, non-finite floats as their strings.

    numpy scalars and arrays, torch tensors and other objects with ``tolist()`` become plain
    numbers and lists (found by duck typing, so lrtui never imports torch); float and int
    subclasses become floats and ints; anything else unknown becomes its ``str()``.
    """
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else NON_FINITE_TO_TEXT[repr(value)]
    if value is None or cls is str or cls is int or cls is bool:
        return value
    if cls is list or cls is tuple:
        return [to_json_value(v) for v in value]
    if cls is dict:
        return {(k if k.__class__ is str else str(k)): to_json_value(v) for k, v in value.items()}
    if isinstance(value, float):
        return to_json_value(float(value))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):  # IntEnum and friends
        return int(value)
    if isinstance(value, str):
        return str(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return to_json_value(tolist())
        except Exception:
            pass
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return str(value)


def _plain(value: Any) -> bool:
    """True when msgspec can write ``value`` as it is, exactly (the common case, checked fast)."""
    cls = value.__class__
    if cls is float:
        return value - value == 0.0  # False for NaN and the infinities
    if cls is int or cls is str or value is None or cls is bool:
        return True
    if cls is list:
        for x in value:
            c = x.__class__
            if c is float:
                if x - x != 0.0:
                    return False
            elif not (c is int or x is None or c is str or c is bool):
                return False
        return True
    return False


def _event_to_json(event: dict[str, Any]) -> dict[str, Any]:
    # This runs for every event the training process writes: most events are flat dicts of
    # finite floats, ints, strings and short lists of them, which msgspec writes as they are,
    # so only an event that holds something else is copied and converted.
    for value in event.values():
        if not _plain(value):
            return {(k if k.__class__ is str else str(k)): v if _plain(v) else to_json_value(v)
                    for k, v in event.items()}
    return event


def encode_event(event: dict[str, Any]) -> bytes:
    """One event as one line of strict JSON (with its newline), non-finite floats as text."""
    try:
        return _encoder.encode(_event_to_json(event)) + b"\n"
    except TypeError:  # a key that is not text
        return _encoder.encode(to_json_value(event)) + b"\n"


def encode_events(events: list[dict[str, Any]]) -> bytes:
    """Several events as newline-terminated lines of strict JSON (one encoder call)."""
    return _encoder.encode_lines([_event_to_json(e) for e in events])


def encode_json(obj: Any) -> bytes:
    """Any JSON document (``meta.json``) with the same non-finite convention as events."""
    return _encoder.encode(to_json_value(obj))


def is_valid_event(obj: Any) -> bool:
    """True for an object with a string ``kind``, an integer ``step`` >= 0 (or null) and a numeric ``time``."""
    if obj.__class__ is not dict:
        return False
    kind = obj.get("kind")
    step = obj.get("step")
    time = obj.get("time")
    return (
        kind.__class__ is str
        and (step is None or (step.__class__ is int and step >= 0))
        and (time.__class__ is float or time.__class__ is int)
    )


def decode_line(line: bytes) -> dict[str, Any] | None:
    """One complete line to an event with floats restored, or None if it is not a valid event."""
    try:
        obj = _decoder.decode(line)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if not is_valid_event(obj):
        return None
    return restore_non_finite(obj)


def decode_lines(lines: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Complete lines to events in order. Returns (events, skipped) where skipped counts garbage.

    Blank lines are neither events nor garbage. Events keep the text form of non-finite floats
    (the column loader converts them in bulk); call :func:`restore_non_finite` on an event that
    is used one at a time.
    """
    lines = [ln for ln in lines if ln and not ln.isspace()]
    if not lines:
        return [], 0
    try:
        # One decoder call for the whole batch is several times faster than one per line. The
        # newline before each comma keeps every line separate (a JSON string cannot hold a raw
        # newline), and the count check catches a line that held more or less than one value.
        objs = _decoder.decode(b"[" + b"\n,".join(lines) + b"\n]")
        if len(objs) != len(lines):
            raise ValueError("a line held more than one value")
    except (msgspec.DecodeError, ValueError, RecursionError):
        objs = []
        for line in lines:
            try:
                objs.append(_decoder.decode(line))
            except (msgspec.DecodeError, ValueError, RecursionError):
                objs.append(None)
    events = [o for o in objs if is_valid_event(o)]
    return events, len(objs) - len(events)


def check_meta(meta: Any, where: Path | str) -> dict[str, Any]:
    """Validate a decoded ``meta.json``; raises RunFormatError with a one-line reason."""
    if not isinstance(meta, dict):
        raise RunFormatError(f"{where}: {META_FILE} is not a JSON object")
    version = meta.get("schema")
    if not isinstance(version, str):
        raise RunFormatError(f"{where}: {META_FILE} has no schema version")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise RunFormatError(f"{where}: unreadable schema version {version!r}") from None
    if major > SCHEMA_MAJOR:
        raise RunFormatError(
            f"{where}: run written with schema {version}, this lrtui reads schema {SCHEMA_MAJOR}.x; "
            "upgrade lrtui"
        )
    if major < 1:
        raise RunFormatError(f"{where}: unknown schema version {version!r}")
    return numbers_back(meta)


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    """Read and validate ``meta.json`` of a run directory."""
    run_dir = Path(run_dir)
    path = run_dir / META_FILE
    if not run_dir.exists():
        raise RunFormatError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise RunFormatError(f"{run_dir}: not a directory")
    if not path.is_file():
        raise RunFormatError(f"{run_dir}: not a run directory (no {META_FILE})")
    real_dir = os.path.realpath(run_dir)
    if os.path.commonpath([real_dir, os.path.realpath(path)]) != real_dir:
        # A reader opens nothing a run merely points at (a link to a file elsewhere).
        raise RunFormatError(f"{path}: points outside the run directory; refusing to follow it")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        meta = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        meta = _decode_big_integers(raw) if "out of range" in str(exc) else None
        if meta is None:
            raise RunFormatError(f"{path}: not valid JSON") from None
    except (ValueError, RecursionError):
        raise RunFormatError(f"{path}: not valid JSON") from None
    return check_meta(meta, run_dir)


def _decode_big_integers(raw: bytes) -> Any:
    """Strict JSON with an integer too long for the fast decoder (it stops at ~4,300 digits):
    such an integer reads as ±inf, as one beyond the float range does in a numeric field.
    None when it is not valid JSON after all."""
    import json

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    def integer(text: str) -> Any:
        return int(text) if len(text) <= 4000 else float(text)

    try:
        return json.loads(raw, parse_int=integer, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None


def is_run_dir(path: Path | str) -> bool:
    """True when ``path`` holds a ``meta.json`` (a run, whatever its schema)."""
    return (Path(path) / META_FILE).is_file()
