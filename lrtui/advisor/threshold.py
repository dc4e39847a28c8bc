"""The stability threshold of an optimizer: where sharpness stops being stable, and what that means.

This module is the one home of the formulas; the app draws ``stability_threshold`` as its line and
the advisor compares sharpness against it.

For a quadratic with curvature λ, an optimizer with step η is stable while λ stays below:

- SGD (no momentum): ``2 / η``.
- Heavy-ball momentum β with dampening d (PyTorch: ``v = βv + (1-d)g; w -= ηv``): ``(2+2β) / ((1-d)η)``.
  Dampening scales every step by (1-d), so it acts as the learning rate ``(1-d)η``.
- Nesterov momentum (PyTorch's form, which needs d = 0): the exact bound of the recursion
  ``z² - (1+β)(1-ηλ)z + β(1-ηλ)``, namely ``(2+2β) / ((1+2β)η)``. It is lower than heavy-ball's
  (``(2+2β)/η``), which would be wrong by a factor 1+2β = 2.8 for β = 0.9.
- SGD weight decay wd (coupled L2) adds wd to every curvature, so the bound on the loss's λ is
  lowered by wd.
- Adam/AdamW (Cohen et al. 2022): on the *preconditioned* sharpness λ_max(P⁻¹H), P = diag(√v̂+ε):
  ``(2+2β1) / ((1-β1)η)`` (38/η for β1 = 0.9). Weight decay is ignored (AdamW's is decoupled and
  shifts the bound by ~η·wd, far below measurement noise).
- RMSprop is preconditioned gradient descent: ``2/η`` (``(2+2β)/η`` with momentum β) on the
  preconditioned sharpness.

Other optimizers have no known threshold: the functions return None and the advisor says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Relative band around the threshold called "at the edge of stability": a sharpness between
#: (1 - EDGE_BAND) and (1 + EDGE_BAND) times the threshold. Cohen et al. see full-batch sharpness
#: hover within a few percent above 2/η; sharpness estimates on a batch scatter by ~10%.
EDGE_BAND = 0.15

#: Optimizers whose threshold applies to the preconditioned sharpness.
PRECONDITIONED = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax", "RMSprop")
#: Optimizers of the SGD family (Hessian sharpness, or batch sharpness when that is all there is).
SGD_LIKE = ("SGD",)


def _group(optimizer_meta: dict[str, Any] | None, group: int) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(optimizer_meta, dict):
        return None
    name = optimizer_meta.get("class")
    groups = optimizer_meta.get("param_groups")
    if not isinstance(name, str) or not isinstance(groups, list) or not groups:
        return None
    g = groups[group] if 0 <= group < len(groups) else groups[0]
    return name, (g if isinstance(g, dict) else {})


def _num(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return float(value)


def threshold_constant(optimizer_meta: dict[str, Any] | None, group: int = 0) -> tuple[float, float] | None:
    """(c, shift) such that the threshold is ``c / lr - shift``; None for an unknown optimizer.

    Args:
        optimizer_meta: the ``optimizer`` object of ``meta.json`` (class and param_groups).
        group: which param group's hyperparameters to use (sharpness is one number for the whole
            model, so the advisor uses group 0).
    """
    found = _group(optimizer_meta, group)
    if found is None:
        return None
    name, g = found
    if name in SGD_LIKE:
        beta = _num(g.get("momentum"), 0.0)
        damp = _num(g.get("dampening"), 0.0)
        wd = max(_num(g.get("weight_decay"), 0.0), 0.0)
        if g.get("nesterov") and beta > 0:
            c = (2.0 + 2.0 * beta) / (1.0 + 2.0 * beta)
        else:
            c = (2.0 + 2.0 * beta) / max(1.0 - damp, 1e-12) if beta > 0 else 2.0
        return c, wd
    if name in PRECONDITIONED:
        if name == "RMSprop":
            beta = _num(g.get("momentum"), 0.0)
            return (2.0 + 2.0 * beta), 0.0
        betas = g.get("betas")
        beta1 = _num(betas[0], 0.9) if isinstance(betas, list) and betas else 0.9
        return (2.0 + 2.0 * beta1) / max(1.0 - beta1, 1e-12), 0.0
    return None


def stability_threshold(
    optimizer_meta: dict[str, Any] | None, lr: float | np.ndarray, group: int = 0
) -> float | np.ndarray | None:
    """Largest stable sharpness at learning rate ``lr`` (vectorized over an array of lr).

    Returns None when the optimizer has no known threshold; NaN where lr is not positive.

    Example:
        >>> stability_threshold({"class": "SGD", "param_groups": [{"momentum": 0.9}]}, 0.1)
        38.0
    """
    return threshold_from(threshold_constant(optimizer_meta, group), lr)


def threshold_from(const: tuple[float, float] | None, lr: float | np.ndarray) -> float | np.ndarray | None:
    """``stability_threshold`` from a ``threshold_constant`` found once (the advisor's per-event path)."""
    if const is None:
        return None
    c, shift = const
    if isinstance(lr, np.ndarray):
        lr = lr.astype(np.float64, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(lr > 0, c / lr - shift, np.nan)
    lr = float(lr)
    return c / lr - shift if lr > 0 and math.isfinite(lr) else math.nan


def max_stable_lr(optimizer_meta: dict[str, Any] | None, sharpness: float, group: int = 0) -> float | None:
    """The threshold formula solved for the learning rate: the largest LR stable at this curvature."""
    const = threshold_constant(optimizer_meta, group)
    if const is None or not math.isfinite(sharpness):
        return None
    c, shift = const
    curvature = sharpness + shift
    return c / curvature if curvature > 0 else math.inf


def sharpness_method(optimizer_meta: dict[str, Any] | None) -> tuple[str, ...]:
    """Sharpness methods comparable with this optimizer's threshold, in order of preference."""
    found = _group(optimizer_meta, 0)
    if found is None:
        return ()
    name = found[0]
    if name in PRECONDITIONED:
        return ("preconditioned",)
    if name in SGD_LIKE:
        return ("hessian", "batch")
    return ()


def edge_state(ratio: float | None) -> str | None:
    """``below``, ``at_edge`` or ``above`` the edge of stability for sharpness/threshold = ratio."""
    if ratio is None or not math.isfinite(ratio):
        return None
    if ratio < 1.0 - EDGE_BAND:
        return "below"
    if ratio <= 1.0 + EDGE_BAND:
        return "at_edge"
    return "above"


__all__ = [
    "EDGE_BAND",
    "edge_state",
    "max_stable_lr",
    "sharpness_method",
    "stability_threshold",
    "threshold_constant",
]
