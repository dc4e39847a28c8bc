"""The curves of one run that the charts draw, built from its ``step`` and ``sharpness`` columns.

A value that is missing (null or absent) is no point at all; one written as NaN or an infinity
is a point the chart marks. A ``hessian`` or ``preconditioned`` sharpness estimate that did not
converge is not drawn (its power iteration stopped short of the top eigenvalue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrtui.advisor import stability_threshold
from lrtui.app.curves import Curve, moving_average
from lrtui.runlog import float_column

#: Sharpness methods whose estimate is iterative and says whether it converged.
ITERATIVE_METHODS = ("hessian", "preconditioned")


@dataclass
class ChartCurves:
    """The curves of one run, built once per data version (and smoothing window)."""

    loss: Curve
    loss_smooth: Curve
    grad_norm: Curve
    sharpness: dict[str, Curve]
    threshold: Curve | None
    lr: list[Curve]
    first_step: float
    last_step: float


def _present(x: np.ndarray, y: np.ndarray, missing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The points of a field that have a value (``missing``: the rows that have none)."""
    if missing is None or not missing.any():
        return x, y
    return x[~missing], y[~missing]


def _field(table: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    col = table.get(name)
    if col is None or col.ndim != 1:
        return np.full(n, np.nan)
    return float_column(col)


def _not_converged(table: dict[str, np.ndarray], methods: np.ndarray) -> np.ndarray:
    """True for iterative estimates logged with ``"converged": false``."""
    col = table.get("converged")
    if col is None or col.ndim != 1:
        return np.zeros(methods.shape, dtype=bool)
    if col.dtype == object:
        false = np.array([v is False for v in col], dtype=bool)
    else:
        false = col == 0.0
    iterative = np.isin(methods.astype(object), ITERATIVE_METHODS) if methods.dtype == object else np.ones(
        methods.shape, dtype=bool)
    return false & iterative


def _sharpness(sharp: dict[str, np.ndarray], missing: dict[str, np.ndarray]) -> dict[str, Curve]:
    if not sharp or "value" not in sharp or "step" not in sharp:
        return {}
    x = float_column(sharp["step"])
    values = _field(sharp, "value", x.size)
    methods = sharp.get("method")
    if methods is None or methods.ndim != 1 or methods.dtype != object:
        methods = np.full(x.size, "hessian", dtype=object)  # no method logged: the probe's default
    usable = ~_not_converged(sharp, methods)
    no_value = missing.get("value")
    curves = {}
    for method in sorted({m for m in methods if isinstance(m, str)}):
        mask = usable & (methods == method)
        if mask.any():
            curves[method] = Curve(*_present(x[mask], values[mask], no_value[mask] if no_value is not None else None))
    return curves


def _threshold(meta: dict[str, Any], x: np.ndarray, lr0: np.ndarray) -> Curve | None:
    if not isinstance(meta.get("optimizer"), dict):
        return None
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # an LR of 5e-324
            line = float_column(np.asarray(stability_threshold(meta["optimizer"], lr0), dtype=np.float64))
        line = np.broadcast_to(line, x.shape)
    except Exception:  # an optimizer the advisor has no threshold for: no line, not a crash
        return None
    keep = np.isfinite(line)  # no LR logged at a step: no threshold there (not a divergence)
    return Curve(x[keep], line[keep]) if keep.any() else None


def build_curves(meta: dict[str, Any], steps: dict[str, np.ndarray], sharp: dict[str, np.ndarray],
                 smoothing: int, missing: dict[str, dict[str, np.ndarray]] | None = None) -> ChartCurves:
    """Curves for the charts from the ``step`` and ``sharpness`` columns of a run.

    ``missing[kind][field]``: the rows of that field with no value (the shape of
    ``RunData.missing``), left out; every other NaN was written as NaN and is marked.
    """
    missing = missing or {}
    step_missing = missing.get("step", {})
    x = float_column(steps["step"])
    n = x.size
    lx, loss = _present(x, _field(steps, "loss", n), step_missing.get("loss"))
    gx, grad = _present(x, _field(steps, "grad_norm", n), step_missing.get("grad_norm"))
    lr = steps.get("lr")  # one column per param group; a scalar LR is one group
    lr = float_column(lr) if lr is not None and lr.ndim in (1, 2) else np.full((n, 1), np.nan)
    if lr.ndim == 1:
        lr = lr[:, None]
    if lr.shape[1] == 0:
        lr = np.full((n, 1), np.nan)
    groups = [Curve(x[np.isfinite(lr[:, g])], lr[np.isfinite(lr[:, g]), g]) for g in range(lr.shape[1])]
    finite_x = x[np.isfinite(x)]
    return ChartCurves(
        loss=Curve(lx, loss),
        loss_smooth=Curve(lx, moving_average(loss, smoothing)),
        grad_norm=Curve(gx, grad),
        sharpness=_sharpness(sharp, missing.get("sharpness", {})),
        threshold=_threshold(meta, x, lr[:, 0]),
        lr=groups,
        first_step=float(finite_x.min()) if finite_x.size else 0.0,
        last_step=float(finite_x.max()) if finite_x.size else 0.0,
    )


__all__ = ["ChartCurves", "ITERATIVE_METHODS", "build_curves"]
