"""Change a running job's learning rate so that its LR scheduler goes on from the new level.

An LR change by a factor f (per param group) means: this step and every later one run at f times
the LR the schedule would have given. Setting ``group["lr"]`` alone is not that: a scheduler
that computes from its own inputs (``base_lrs``, OneCycle's ``max_lr``) overwrites it at its
next ``step()``. So the inputs are rescaled too, per scheduler class, in ``RESCALED``. A
scheduler of a class not listed there (or a subclass that overrides how it computes) is refused:
the probe cannot know what it computes from.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch.optim import lr_scheduler as sched
from torch.optim.swa_utils import SWALR

#: What each scheduler class computes from, besides ``group["lr"]`` (always set), and
#: ``group["initial_lr"]`` and ``_last_lr`` (kept consistent, whatever the class). Attribute
#: names are the scheduler's; ``group:NAME`` is a key of every param group; a name marked
#: ``shared:`` is one number for all groups (rescaled only when every group moves by one factor,
#: or it is 0); ``optional:`` an attribute some torch versions lack; ``children`` the schedulers
#: a container runs (each rescaled by its own class's rule).
RESCALED: dict[type, tuple[str, ...]] = {
    sched.LambdaLR: ("base_lrs",),
    sched.MultiplicativeLR: ("base_lrs",),
    sched.StepLR: ("base_lrs",),
    sched.MultiStepLR: ("base_lrs",),
    sched.ConstantLR: ("base_lrs",),
    sched.LinearLR: ("base_lrs",),
    sched.ExponentialLR: ("base_lrs",),
    sched.PolynomialLR: ("base_lrs",),
    sched.CosineAnnealingLR: ("base_lrs", "shared:eta_min"),
    sched.CosineAnnealingWarmRestarts: ("base_lrs", "shared:eta_min"),
    sched.CyclicLR: ("base_lrs", "max_lrs"),
    sched.OneCycleLR: ("base_lrs", "group:max_lr", "group:min_lr"),
    sched.ReduceLROnPlateau: ("min_lrs",),
    SWALR: ("base_lrs", "group:swa_lr"),
    sched.SequentialLR: ("children", "optional:base_lrs"),
    sched.ChainedScheduler: ("children",),
}
#: Methods a subclass may not override and still count as its known base class.
_HOW_IT_COMPUTES = ("get_lr", "_get_closed_form_lr", "step", "_update_lr")


class RescaleError(Exception):
    """The change cannot be made right; the message says why in one line."""


def _base(scheduler: Any) -> type | None:
    """The class in ``RESCALED`` the scheduler behaves as, or None."""
    cls = type(scheduler)
    if cls in RESCALED:
        return cls
    for known in cls.__mro__[1:]:
        if known in RESCALED:
            same = all(getattr(cls, m, None) is getattr(known, m, None) for m in _HOW_IT_COMPUTES)
            return known if same else None
    return None


def _children(scheduler: Any) -> list[Any]:
    return list(getattr(scheduler, "_schedulers", []) or [])


def find_scheduler(optimizer: torch.optim.Optimizer) -> Any:
    """The LR scheduler attached to ``optimizer``, found among the objects that refer to it.

    Returns None when there is none. Raises RescaleError when there are several that are not
    parts of one another (a ``SequentialLR``'s children refer to the optimizer too).
    """
    found = [r for r in gc.get_referrers(optimizer)
             if isinstance(r, (sched.LRScheduler, sched.ReduceLROnPlateau)) and getattr(r, "optimizer", None) is optimizer]
    parts = {id(c) for s in found for c in _all_children(s)}
    outer = [s for s in found if id(s) not in parts]
    if len(outer) > 1:
        names = ", ".join(sorted(type(s).__name__ for s in outer))
        raise RescaleError(f"found {len(outer)} LR schedulers on the optimizer ({names}); pass scheduler= to Probe")
    return outer[0] if outer else None


def _all_children(scheduler: Any) -> list[Any]:
    out = []
    for child in _children(scheduler):
        out.append(child)
        out.extend(_all_children(child))
    return out


@dataclass
class LRChange:
    """A planned change: each group's factor and, for an absolute change, its exact new LR."""

    factors: list[float]
    new_lrs: list[float | None]
    scheduler: Any = None
    rescaled: list[str] = field(default_factory=list)


def plan_change(optimizer: torch.optim.Optimizer, scheduler: Any, *, factors: Sequence[float] | None = None,
                new_lrs: Sequence[float] | None = None, current: Sequence[float] | None = None) -> LRChange:
    """Check that the change can be made right and work out each group's factor.

    Give ``factors`` (one per group) or ``new_lrs`` (one per group). ``current``: the LRs the
    change starts from, when an earlier change planned for the same step will have moved them.
    Raises RescaleError.
    """
    groups = optimizer.param_groups
    current = list(current) if current is not None else [lr_of(g) for g in groups]
    if new_lrs is not None:
        if len(new_lrs) != len(groups):
            raise RescaleError(f"{len(new_lrs)} learning rates for {len(groups)} param groups")
        exact: list[float | None] = [float(v) for v in new_lrs]
        if scheduler is None:
            fs = [v / c if c > 0 else math.nan for v, c in zip(new_lrs, current)]
        else:
            for gi, c in enumerate(current):
                if not c > 0:
                    raise RescaleError(f"param group {gi} is at lr {c:g} now, so the schedule cannot be rescaled "
                                       "to an absolute LR; give a factor instead")
            fs = [v / c for v, c in zip(new_lrs, current)]
    else:
        assert factors is not None
        fs = [float(f) for f in factors]
        exact = [None] * len(groups)
    if scheduler is None:
        return LRChange(fs, exact)
    what = _plan(scheduler, fs, [])
    return LRChange(fs, exact, scheduler, what)


def _plan(scheduler: Any, fs: list[float], out: list[str]) -> list[str]:
    base = _base(scheduler)
    name = type(scheduler).__name__
    if base is None:
        raise RescaleError(f"the LR scheduler {name} is not one the probe can rescale (it cannot know what it "
                           "computes from); see docs/control.md")
    uniform = len(set(fs)) <= 1
    for attr in RESCALED[base]:
        if attr == "children":
            for child in _children(scheduler):
                _plan(child, fs, out)
            continue
        if attr.startswith("shared:"):
            key = attr.split(":", 1)[1]
            value = float(getattr(scheduler, key, 0.0) or 0.0)
            if value != 0.0 and not uniform:
                raise RescaleError(f"{name} has one {key} for all param groups; it cannot follow different "
                                   "factors per group")
            out.append(f"{name}.{key}")
        elif attr.startswith("group:"):
            out.append(f"{name} param_groups[{attr.split(':', 1)[1]}]")
        else:
            key = attr.removeprefix("optional:")
            if key != attr and not hasattr(scheduler, key):
                continue
            if len(getattr(scheduler, key, [])) != len(fs):
                raise RescaleError(f"{name}.{key} does not have one entry per param group")
            out.append(f"{name}.{key}")
    return out


def apply_change(optimizer: torch.optim.Optimizer, change: LRChange) -> list[float]:
    """Make the planned change; returns each group's LR after it."""
    for group, f, new in zip(optimizer.param_groups, change.factors, change.new_lrs):
        group["lr"] = _set(group["lr"], new, f, in_place=True)
        if "initial_lr" in group and math.isfinite(f):
            group["initial_lr"] = _set(group["initial_lr"], None, f)
    if change.scheduler is not None:
        _rescale(change.scheduler, change.factors, optimizer)
    return [lr_of(g) for g in optimizer.param_groups]


def _rescale(scheduler: Any, fs: list[float], optimizer: torch.optim.Optimizer) -> None:
    base = _base(scheduler)
    assert base is not None
    for attr in RESCALED[base]:
        if attr == "children":
            for child in _children(scheduler):
                _rescale(child, fs, optimizer)
        elif attr.startswith("shared:"):
            key = attr.split(":", 1)[1]
            value = getattr(scheduler, key, 0.0)
            if value:
                setattr(scheduler, key, float(value) * fs[0])
        elif attr.startswith("group:"):
            key = attr.split(":", 1)[1]
            for group, f in zip(optimizer.param_groups, fs):
                if key in group:
                    group[key] = _set(group[key], None, f)
        else:
            key = attr.removeprefix("optional:")
            if hasattr(scheduler, key):
                setattr(scheduler, key, [_set(v, None, f) for v, f in zip(getattr(scheduler, key), fs)])
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [lr_of(g) for g in optimizer.param_groups]


def _set(value: Any, new: float | None, f: float, in_place: bool = False) -> Any:
    """``value`` times ``f`` (or ``new``). A tensor ``group["lr"]`` is changed in place (a
    capturable optimizer holds it); any other tensor is replaced, since a scheduler's inputs may
    share one tensor (``initial_lr`` and ``base_lrs``) that must not be scaled twice."""
    if isinstance(value, torch.Tensor):
        if not in_place:
            return value * f if new is None else torch.full_like(value, new)
        if new is not None:
            value.fill_(new)
        else:
            value.mul_(f)
        return value
    return float(new) if new is not None else float(value) * f


def lr_of(group: dict[str, Any]) -> float:
    """A param group's LR as a float (a tensor LR is read once)."""
    lr = group["lr"]
    return float(lr.detach().cpu()) if isinstance(lr, torch.Tensor) else float(lr)


def scheduler_name(scheduler: Any) -> str:
    """``SequentialLR(LinearLR, CosineAnnealingLR)`` for nested ones."""
    children = _children(scheduler)
    name = type(scheduler).__name__
    return f"{name}({', '.join(scheduler_name(c) for c in children)})" if children else name
