"""Which NaNs in a run's columns were written as NaN, and which are only missing values.

The reader's columns hold NaN both for a value written as ``"NaN"`` and for one that is null or
absent. The charts must tell them apart (docs/run-format.md: missing is no value, only NaN and
the infinities are non-finite): a missing loss is not drawn, a NaN loss is marked. So the reading
threads note, per drawn field, the steps whose value was written as NaN; everything else that is
NaN in a column is missing. Infinities need no note: a column keeps them as they are.

``missing_rows`` gives the answer in the shape of ``RunData.missing`` (issue 18 adds it to the
reader): once that is on main, the screen asks the reader and this module goes.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from lrtui.runlog import float_column
from lrtui.runlog.format import NON_FINITE_MARKERS, decode_lines

#: The fields the charts draw, by event kind.
DRAWN_FIELDS = {"step": ("loss", "grad_norm"), "sharpness": ("value",)}


def _is_nan(value: Any) -> bool:
    # a decoded line keeps the text form; an event from the follower has it restored
    return value == "NaN" or (value.__class__ is float and math.isnan(value))


class NonFiniteSteps:
    """Steps, per (kind, field), whose value was written as NaN."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, str], list[float]] = {}
        self._frozen: dict[tuple[str, str], np.ndarray] | None = {}

    def note_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Note the NaNs of decoded events (either form of non-finite values)."""
        for event in events:
            fields = DRAWN_FIELDS.get(event.get("kind"))  # type: ignore[arg-type]
            if fields is None:
                continue
            step = event.get("step")
            if step.__class__ is not int:
                continue
            for name in fields:
                if _is_nan(event.get(name)):
                    self._steps.setdefault((event["kind"], name), []).append(float(step))
                    self._frozen = None

    def note_block(self, block: bytes) -> None:
        """Note the NaNs of a block of complete lines (as read from ``events.jsonl``). A block
        without a NaN string, the usual case, costs one search."""
        if NON_FINITE_MARKERS[0] in block:
            self.note_events(decode_lines(block.split(b"\n"))[0])

    def frozen(self) -> dict[tuple[str, str], np.ndarray]:
        """The steps noted so far, as sorted arrays (what the curves are built from)."""
        if self._frozen is None:
            self._frozen = {key: np.unique(np.asarray(steps)) for key, steps in self._steps.items()}
        return self._frozen


def missing_rows(written: dict[tuple[str, str], np.ndarray], kind: str,
                 table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each drawn field of ``kind`` with rows of no value, the mask of those rows, aligned
    with ``table`` (the kind's columns): a NaN at a step not in ``written``
    (``NonFiniteSteps.frozen``)."""
    out: dict[str, np.ndarray] = {}
    if not table or "step" not in table:
        return out
    x = float_column(table["step"])
    for name in DRAWN_FIELDS.get(kind, ()):
        col = table.get(name)
        if col is None or col.ndim != 1:
            continue
        nan = np.isnan(float_column(col))
        steps = written.get((kind, name))
        mask = nan & ~np.isin(x, steps) if steps is not None and nan.any() else nan
        if mask.any():
            out[name] = mask
    return out


__all__ = ["DRAWN_FIELDS", "NonFiniteSteps", "missing_rows"]
