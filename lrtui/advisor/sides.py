"""What the advisor takes in: step events as rows or columns, and the side events, each put after its step.

A side event (``sharpness``, ``metric``, ``action``) belongs after the last step event at or
before its step. The probe writes step events in batches, so a side event often arrives before its
step's event: it waits (``SideEvents.due``) until a later step has arrived, or the run is complete.
Events of one logged step are taken in this order: sharpness, metrics, actions, each as it came.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from lrtui.runlog.numbers import float_column, number

#: Largest step taken: every integer up to it is exact in the float64 step columns.
STEP_MAX = 2**53
#: Order of the side kinds at one logged step.
KIND_RANK = {"sharpness": 0, "metric": 1, "action": 2}
#: Actions that set the LR (an applied one starts a phase).
LR_ACTIONS = ("set_lr", "drop_lr")


def is_step(value: Any) -> bool:
    """A step the advisor takes: a JSON integer of at most ``STEP_MAX`` in magnitude."""
    return value.__class__ is int and -STEP_MAX <= value <= STEP_MAX


def step_row(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """(step, loss, grad_norm, lr of group 0, skipped, every group's lr) of a step event; None when
    its step is not one the advisor takes."""
    step = event.get("step")
    if not is_step(step):
        return None
    lr = event.get("lr")
    lrs = [number(v) for v in lr] if lr.__class__ is list else ([number(lr)] if number(lr) is not None else [])
    lrs = [math.nan if v is None else v for v in lrs]
    return (step, number(event.get("loss")), number(event.get("grad_norm")), lrs[0] if lrs else math.nan,
            event.get("skipped") is True, lrs)


def bulk_columns(data: Any) -> tuple[Any, ...] | None:
    """The step table of a ``RunData`` as ``StepSeries.extend``'s columns, plus the last lrs.

    A column source tells missing values from non-finite ones by ``data.missing(kind)`` (field ->
    mask of the rows with no value); one without it counts every NaN as non-finite.
    """
    tab = data.table("step")
    if not tab or "step" not in tab:
        return None
    raw = float_column(tab["step"])
    keep = np.isfinite(raw) & (raw == np.round(raw)) & (np.abs(raw) <= STEP_MAX)
    n = int(keep.sum())
    if not n:
        return None
    missing_of = getattr(data, "missing", None)
    masks = missing_of("step") if callable(missing_of) else {}

    def scalar(name: str) -> tuple[np.ndarray, np.ndarray]:
        col = tab.get(name)
        if col is None:
            return np.full(n, math.nan), np.ones(n, dtype=bool)
        values = float_column(col) if col.ndim == 1 else np.full(len(col), math.nan)
        if col.ndim != 1:
            absent = np.ones(len(col), dtype=bool)
        elif col.dtype == object:  # text or other non-numbers: no value
            absent = np.array([v is None or isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in col])
        else:
            absent = masks.get(name, np.zeros(len(col), dtype=bool))
        return values[keep], absent[keep]

    loss, loss_missing = scalar("loss")
    grad, grad_missing = scalar("grad_norm")
    skipped_col = tab.get("skipped")
    skipped = np.zeros(n, dtype=bool) if skipped_col is None or skipped_col.ndim != 1 else \
        (float_column(skipped_col) == 1.0)[keep]
    lr_col = tab.get("lr")
    if lr_col is None or lr_col.dtype == object or (lr_col.ndim == 2 and lr_col.shape[1] == 0):
        lr0, last = np.full(n, math.nan), []
    elif lr_col.ndim == 2:
        lr_col = lr_col[keep]
        lr0, last = lr_col[:, 0].astype(np.float64), [float(v) for v in lr_col[-1]]
    else:
        lr0 = lr_col[keep].astype(np.float64)
        last = [float(lr0[-1])]
    return raw[keep].astype(np.int64), loss, loss_missing, grad, grad_missing, lr0, skipped, last


class SideEvents:
    """Side events waiting for their place among the logged steps."""

    def __init__(self) -> None:
        self._waiting: list[tuple[float, int, int, dict[str, Any]]] = []  # (step, kind rank, arrival, event)
        self._seq = 0

    def add(self, event: dict[str, Any], phase_scan: Any) -> None:
        """Queue one side event; an applied LR action also tells the phase scan where a phase starts."""
        step = event.get("step")
        kind = event.get("kind")
        if kind == "action":
            if not is_step(step):
                return
            if event.get("action") in LR_ACTIONS:
                phase_scan.action(step)
        self._seq += 1
        where = float(step) if step is not None and is_step(step) else math.inf
        self._waiting.append((where, KIND_RANK.get(str(kind), 3), self._seq, event))

    def due(self, steps: np.ndarray, n: int, final: bool) -> list[tuple[int, int, dict[str, Any]]]:
        """The events whose place is known among the first n logged steps: (index, order, event);
        with ``final`` every one (those after the last step go after it)."""
        if not self._waiting:
            return []
        last = float(steps[n - 1]) if n else -math.inf
        ready: list[tuple[float, int, int, dict[str, Any]]] = []
        keep: list[tuple[float, int, int, dict[str, Any]]] = []
        for item in self._waiting:
            (ready if final or item[0] < last else keep).append(item)
        self._waiting = keep
        out = []
        for where, rank, seq, event in ready:
            i = (bisect.bisect_right(steps[:n], where) - 1) if where != math.inf else n - 1
            out.append((i, rank * (1 << 40) + seq, event))
        return out

    @staticmethod
    def from_data(data: Any) -> list[dict[str, Any]]:
        """The side events of a ``RunData``, as events, each kind in its file order."""
        out: list[dict[str, Any]] = []
        for kind in ("sharpness", "action"):
            tab = data.table(kind)
            if not tab:
                continue
            n = len(next(iter(tab.values())))
            for k in range(n):
                event: dict[str, Any] = {"kind": kind}
                for name, col in tab.items():
                    event[name] = _python(col[k], name)
                out.append(event)
        out.extend(data.records.get("metric", []))
        return out


def _python(value: Any, name: str) -> Any:
    """A table cell as the event held it (as far as the advisor reads it)."""
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if name == "step":
        return int(value) if isinstance(value, float) and value == value and value == int(value) else None
    if name == "converged" and isinstance(value, float):
        return None if value != value else bool(value)
    return value


def rows_to_columns(rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
    """Queued step rows (step, loss, grad, lr, skipped, lrs) as the columns ``StepSeries.extend`` takes."""
    step, loss, grad, lr, skipped, _ = zip(*rows)
    loss_missing = np.fromiter((v is None for v in loss), bool, len(rows))
    grad_missing = np.fromiter((v is None for v in grad), bool, len(rows))
    as_float = lambda col: np.array([math.nan if v is None else v for v in col], dtype=np.float64)  # noqa: E731
    return (np.array(step, dtype=np.int64), as_float(loss), loss_missing, as_float(grad), grad_missing,
            np.array(lr, dtype=np.float64), np.array(skipped, dtype=bool))


__all__ = ["SideEvents", "bulk_columns", "is_step", "rows_to_columns", "step_row"]
