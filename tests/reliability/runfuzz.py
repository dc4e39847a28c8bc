"""Hypothesis strategies for fuzzed run directories, each line paired with what a reader must make of it."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

#: Kinds of schema 1 plus names no reader knows (a newer minor version may add kinds).
KIND_NAMES = ["step", "sharpness", "activations", "metric", "system", "overhead", "warning", "end",
              "future_kind", ""]
#: The strings the format reads as non-finite floats; kept out of text fields so the oracle stays simple.
NON_FINITE_TEXT = {"NaN", "Infinity", "-Infinity"}
#: Numeric fields the readers put into columns and the advisor reads.
NUMERIC_FIELDS = ["loss", "grad_norm", "update_norm", "weight_norm", "value", "fraction", "test_acc"]


def to_json_text(value: Any) -> Any:
    """The format's convention, written independently of lrtui: non-finite floats as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [to_json_text(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_text(v) for k, v in value.items()}
    return value


def canonical(value: Any) -> Any:
    """A comparable form: NaN equals NaN, ints and floats stay distinct."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value)
    if isinstance(value, list):
        return ["list", *[canonical(v) for v in value]]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


text = st.text(max_size=12).filter(lambda s: s not in NON_FINITE_TEXT)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-320]),
)
values = st.recursive(
    st.one_of(numbers, text, st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def valid_events(draw: Any) -> dict[str, Any]:
    """An event every reader must keep: string kind, step int >= 0 or null, numeric time."""
    event: dict[str, Any] = {
        "kind": draw(st.sampled_from(KIND_NAMES)),
        # Steps out of order, repeated, huge: readers keep them in file order.
        "step": draw(st.one_of(st.none(), st.integers(0, 5), st.integers(0, 2**63 - 1))),
        "time": draw(st.one_of(st.floats(0, 2e9), st.integers(0, 2**40))),
    }
    for name in draw(st.lists(st.sampled_from(NUMERIC_FIELDS), max_size=3, unique=True)):
        event[name] = draw(numbers)
    if draw(st.booleans()):
        event["lr"] = draw(st.lists(numbers, max_size=3))
    if draw(st.booleans()):
        event[draw(text.filter(lambda s: s not in ("kind", "step", "time")))] = draw(values)
    return event


@st.composite
def invalid_objects(draw: Any) -> Any:
    """JSON values that are not events: wrong types, missing fields, not objects."""
    base = {"kind": "step", "step": 3, "time": 1.5, "loss": 0.5}
    flaw = draw(st.sampled_from(["missing", "wrong_type", "negative_step", "not_object"]))
    if flaw == "missing":  # (a missing step is read as null, like the end record's)
        del base[draw(st.sampled_from(["kind", "time"]))]
        return base
    if flaw == "wrong_type":
        name = draw(st.sampled_from(["kind", "step", "time"]))
        wrong = {"kind": st.one_of(st.integers(), st.none(), st.lists(text, max_size=2)),
                 "step": st.one_of(st.floats(), text, st.booleans()),
                 "time": st.one_of(text, st.none(), st.booleans(), st.lists(st.floats(), max_size=2))}
        base[name] = draw(wrong[name])
        if name == "step" and isinstance(base[name], float) and base[name].is_integer():
            base[name] = str(base[name])  # 3.0 is a float in JSON, but keep the flaw unambiguous
        return base
    if flaw == "negative_step":
        base["step"] = draw(st.integers(max_value=-1))
        return base
    return draw(st.one_of(st.lists(values, max_size=3), numbers, text, st.booleans(), st.none()))


@dataclass
class Expected:
    """What a correct reader makes of a fuzzed ``events.jsonl``."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    lines: list[str] = field(default_factory=list)  # what each line was, for failure messages


def _valid_line(event: dict[str, Any]) -> bytes:
    return json.dumps(to_json_text(event), allow_nan=False).encode()


@st.composite
def event_logs(draw: Any, max_lines: int = 25) -> tuple[bytes, Expected]:
    """Bytes of an ``events.jsonl`` mixing good and bad lines, with the expected reading."""
    expected = Expected()
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, max_lines))):
        what = draw(st.sampled_from(["valid", "valid", "valid", "invalid", "truncated", "bytes", "blank",
                                     "deep", "huge_int"]))
        if what == "valid":
            event = draw(valid_events())
            line = _valid_line(event)
            expected.events.append(event)
        elif what == "invalid":
            line = json.dumps(to_json_text(draw(invalid_objects())), allow_nan=False).encode()
            expected.skipped += 1
        elif what == "truncated":
            full = _valid_line(draw(valid_events()))
            line = full[: draw(st.integers(1, len(full) - 1))]
            expected.skipped += 1
        elif what == "bytes":
            line = draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b"")
            if not line.strip():
                what = "blank"
            else:
                expected.skipped += 1
        elif what == "deep":  # nesting deep enough to exhaust a recursive decoder
            depth = draw(st.sampled_from([2, 100, 5000, 200_000]))
            line = b'{"kind":"step","step":1,"time":1,"x":' + b"[" * depth + b"]" * depth + b"}"
            if depth <= 100:
                expected.events.append({"kind": "step", "step": 1, "time": 1,
                                        "x": json.loads(b"[" * depth + b"]" * depth)})
            else:  # too deep to decode: garbage, not a crash
                expected.skipped += 1
        elif what == "huge_int":  # a number no float can hold, in a numeric field or as the step
            digits = draw(st.sampled_from([30, 400, 4000]))
            name = draw(st.sampled_from(["loss", "step", "time"]))
            line = (b'{"kind":"step","step":2,"time":2,"loss":1}').replace(
                f'"{name}":'.encode() + (b"2" if name != "loss" else b"1"),
                f'"{name}":'.encode() + b"9" * digits)
            expected.events.append({"kind": "step", "step": 2, "time": 2, "loss": 1,
                                    name: int("9" * digits)})
        if what == "blank":
            line = draw(st.sampled_from([b"", b" ", b"\t", b"  \r"]))
        expected.lines.append(what)
        parts.append(line + b"\n")
    data = b"".join(parts)
    if draw(st.booleans()):  # a last line still being written: no reader may use it yet
        tail = _valid_line(draw(valid_events()))
        data += tail[: draw(st.integers(1, len(tail)))]
        expected.lines.append("partial")
    return data, expected


def write_meta(run_dir: Path, **fields: Any) -> None:
    """A valid ``meta.json`` written without lrtui's writer (the format is the contract)."""
    meta = {"schema": "1.0", "run_id": "f" * 32, "name": run_dir.name, "started_at": time.time(),
            "host": socket.gethostname(), "pid": os.getpid(), "argv": ["train.py"],
            "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.0, "params": 10}]}}
    meta.update(fields)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(to_json_text(meta), allow_nan=False))


@st.composite
def metas(draw: Any) -> dict[str, Any]:
    """A ``meta.json`` of the right schema whose other fields may hold anything at all."""
    garbage = st.one_of(numbers, text, st.none(), st.booleans(), st.lists(numbers, max_size=3))
    group = st.fixed_dictionaries({}, optional={
        "lr": st.one_of(numbers, garbage), "momentum": st.one_of(numbers, garbage),
        "betas": st.one_of(st.lists(numbers, max_size=3), garbage), "eps": garbage,
        "nesterov": st.one_of(st.booleans(), garbage), "dampening": garbage,
        "weight_decay": garbage, "params": garbage, "scale_invariant": garbage})
    optimizer = st.one_of(
        st.fixed_dictionaries({"class": st.one_of(st.sampled_from(["SGD", "Adam", "AdamW", "Lion"]), garbage),
                               "param_groups": st.one_of(st.lists(group, max_size=3), garbage)}),
        garbage)
    meta = {"schema": draw(st.sampled_from(["1.0", "1.3"]))}
    for name, strategy in [("optimizer", optimizer), ("name", st.one_of(text, garbage)),
                           ("pid", st.one_of(st.integers(-5, 2**70), garbage)),
                           ("host", st.one_of(st.just(socket.gethostname()), garbage)),
                           ("started_at", st.one_of(st.floats(), garbage)),
                           ("probe", st.one_of(st.dictionaries(text, values, max_size=3), garbage)),
                           ("world_size", garbage)]:
        if draw(st.booleans()):
            meta[name] = draw(strategy)
    return meta


@st.composite
def step_series(draw: Any) -> bytes:
    """A plausible but hostile training log: real step events whose numbers go anywhere
    (NaN, inf, huge, negative, out of order, repeated), with sharpness and metric events."""
    lines = []
    step = 0
    for _ in range(draw(st.integers(0, 120))):
        step = draw(st.one_of(st.just(step + 1), st.just(step), st.integers(0, 200)))
        event: dict[str, Any] = {"kind": "step", "step": step, "time": 1e9 + step,
                                 "loss": draw(numbers), "grad_norm": draw(numbers),
                                 "lr": draw(st.one_of(st.lists(numbers, min_size=1, max_size=2), numbers, text))}
        lines.append(event)
        if draw(st.integers(0, 9)) == 0:
            lines.append({"kind": "sharpness", "step": step, "time": 1e9 + step,
                          "method": draw(st.sampled_from(["hessian", "preconditioned", "batch", "??"])),
                          "value": draw(numbers)})
        if draw(st.integers(0, 19)) == 0:
            lines.append({"kind": "metric", "step": step, "time": 1e9 + step, "test_acc": draw(values)})
    return b"".join(json.dumps(to_json_text(e), allow_nan=False).encode() + b"\n" for e in lines)
