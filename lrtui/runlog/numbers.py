"""The one home of "maybe a number": what a value read from a run means as a number.

The format's rules (docs/run-format.md, *Numbers*): the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` are those floats; ``null`` or an absent field is no value; any other text is not
a number; an integer beyond the float range is as infinite as a float gets. Every reader (the
loader, the follower, the advisor, the app, ``advise --json``) coerces through these helpers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Strict JSON has no NaN or infinities, so non-finite floats are written as these strings.
#: A numeric field that holds one of them holds that float.
NON_FINITE_TO_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
TEXT_TO_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: The same strings as raw bytes, to tell cheaply whether a block of lines holds any.
NON_FINITE_MARKERS = (b'"NaN"', b'Infinity"')
NON_FINITE_STRINGS = frozenset(TEXT_TO_NON_FINITE)


def numbers_back(value: Any) -> Any:
    """A decoded JSON value with the three non-finite strings turned back into floats, in lists
    and objects too; everything else as it is."""
    cls = value.__class__
    if cls is str:
        return TEXT_TO_NON_FINITE.get(value, value)
    if cls is list:
        return [numbers_back(v) for v in value]
    if cls is dict:
        return {k: numbers_back(v) for k, v in value.items()}
    return value


def restore_non_finite(event: dict[str, Any]) -> dict[str, Any]:
    """Turn the ``"NaN"``/``"Infinity"``/``"-Infinity"`` strings of a decoded event into floats."""
    return {k: numbers_back(v) for k, v in event.items()}


def number(value: Any) -> float | None:
    """A numeric field's value as a float (NaN and infinities kept; an integer beyond the float
    range as ±inf), or None for no value (null, absent, text, a bool)."""
    if value.__class__ is float:
        return value
    if value.__class__ is bool or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def finite_float(value: Any) -> float | None:
    """A number as a finite float, else None (text, bool, NaN, infinities, 10**400)."""
    if value.__class__ is bool or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def as_float(value: Any) -> float:
    """A value of a numeric list (one per param group) as a float: a non-finite string as its
    float, a bool as 0/1, any other non-number NaN."""
    if value.__class__ is str:
        return TEXT_TO_NON_FINITE.get(value, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def float_column(column: np.ndarray) -> np.ndarray:
    """A column as float64 whatever it holds: numbers as floats (an integer beyond the float
    range as ±inf), anything else NaN. A 2-D column (a list per event) stays 2-D. Readers of
    columns (the advisor, the app) use this so an object column never reaches arithmetic."""
    if column.dtype != object:
        return column.astype(np.float64, copy=False)
    out = np.full(column.shape, np.nan)
    flat, dest = column.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat):
        f = number(v)
        if f is not None:
            dest[i] = f
    return out


def json_number(value: Any) -> Any:
    """A value for strict JSON output: None for NaN, infinities and missing values; ints stay
    ints; lists and objects element by element; a numpy scalar as a float."""
    if value is None or value.__class__ is bool or value.__class__ is int:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [json_number(v) for v in value]
    if isinstance(value, dict):
        return {k: json_number(v) for k, v in value.items()}
    if isinstance(value, (bool, int)):
        return value
    try:  # numpy scalars
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None


__all__ = [
    "NON_FINITE_MARKERS",
    "NON_FINITE_STRINGS",
    "NON_FINITE_TO_TEXT",
    "TEXT_TO_NON_FINITE",
    "as_float",
    "finite_float",
    "float_column",
    "json_number",
    "number",
    "numbers_back",
    "restore_non_finite",
]
