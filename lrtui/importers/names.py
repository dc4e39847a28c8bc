"""Which logged scalar is which step field: the common names frameworks use, and ``--map`` overrides."""

from __future__ import annotations

import re
from typing import Iterable

from lrtui.errors import UserError
from lrtui.runlog.format import RESERVED_FIELDS

#: The step fields a scalar can fill (docs/run-format.md); ``lr`` is a list, one per param group.
STEP_TARGETS = ("loss", "grad_norm", "update_norm", "weight_norm", "lr")
#: ``--map NAME=skip`` leaves a scalar out.
SKIP = "skip"

#: Common names, compared lowercased, in order of preference (the first present wins a field).
#: Sources: plain loops, PyTorch Lightning (``train_loss``, ``train_loss_step``, ``lr-AdamW``,
#: ``grad_2.0_norm_total``), Hugging Face Trainer (``train/loss``, ``train/learning_rate``,
#: ``train/grad_norm``), Keras and W&B exports (``loss``, ``learning_rate``).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "loss": (
        "loss", "train/loss", "train_loss", "training_loss", "train/loss_step", "train_loss_step",
        "loss/train", "train/train_loss", "trainer/loss", "training/loss", "batch_loss", "epoch_loss",
    ),
    "grad_norm": (
        "grad_norm", "train/grad_norm", "gradient_norm", "grad_norm/total", "grad_2.0_norm_total",
        "train/gradient_norm", "grads/norm", "global_grad_norm",
    ),
    "update_norm": ("update_norm", "train/update_norm"),
    "weight_norm": ("weight_norm", "train/weight_norm", "param_norm", "train/param_norm"),
    "lr": (
        "lr", "learning_rate", "train/learning_rate", "train/lr", "trainer/lr", "optimizer/lr", "lr/train",
        "training/learning_rate", "lr-0",
    ),
}

#: Lightning's LearningRateMonitor: ``lr-AdamW``, or ``lr-AdamW/pg1``, ``lr-AdamW/pg2``, ... one
#: per param group (also ``lr-SGD-momentum`` with ``log_momentum``, which is not an LR).
_LR_MONITOR = re.compile(r"^lr-([A-Za-z][A-Za-z0-9_]*)(?:/pg(\d+))?$")
#: Param-group LRs under one prefix: ``lr/pg0``, ``lr/group_1``, ``learning_rate/2``.
_LR_GROUPS = re.compile(r"^(?:train/)?(?:lr|learning_rate)[/_](?:pg|group_?|param_group_?)?(\d+)$")


def parse_map(items: Iterable[str]) -> dict[str, str]:
    """``--map NAME=FIELD`` arguments to {NAME: FIELD}; a one-line UserError for a bad one.

    FIELD is a step field (loss, grad_norm, update_norm, weight_norm, lr), ``skip``, or any other
    name: the scalar is then kept as a user metric of that name (``--map val/top1=test_acc``).
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, field = item.rpartition("=")
        name, field = name.strip(), field.strip()
        if not sep or not name or not field:
            raise UserError(f"--map {item!r}: expected NAME=FIELD, e.g. --map 'Loss/train=loss'")
        if field in RESERVED_FIELDS:
            raise UserError(f"--map {item!r}: {field!r} is reserved; pick another metric name")
        out[name] = field
    return out


def assign(names: Iterable[str], overrides: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Each scalar name to (target, param group): a step field (the group matters for ``lr`` only),
    ``skip``, or a metric name (its own, or the one ``--map`` gives). Overrides win; each step field
    is then filled by the first common name present; the rest are metrics."""
    names = list(dict.fromkeys(names))
    plan: dict[str, tuple[str, int]] = {}
    taken: set[str] = set()
    for name in names:
        if name in overrides:
            plan[name] = (overrides[name], 0)
            if overrides[name] in STEP_TARGETS:
                taken.add(overrides[name])
    if "lr" in taken:
        lr_names = [n for n, field in overrides.items() if field == "lr" and n in plan]
        plan.update({n: ("lr", i) for i, n in enumerate(lr_names)})  # several: one per group, as given
    lowered: dict[str, str] = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    for field, candidates in COMMON_NAMES.items():
        if field in taken:
            continue
        for candidate in candidates:
            present = lowered.get(candidate)
            if present is not None and present not in plan:
                plan[present] = (field, 0)
                taken.add(field)
                break
    if "lr" not in taken:
        groups = _lr_groups([n for n in names if n not in plan])
        for group, name in enumerate(groups):
            plan[name] = ("lr", group)
    for name in names:
        if name not in plan:
            plan[name] = (_metric_name(name), 0)
    return plan


def _lr_groups(names: list[str]) -> list[str]:
    """Param-group LR scalars of one optimizer, in group order ([] when there are none)."""
    monitor: dict[str, dict[int, str]] = {}
    for name in names:
        found = _LR_MONITOR.match(name)
        if found:
            monitor.setdefault(found.group(1), {})[int(found.group(2) or 0)] = name
    if monitor:
        first = sorted(monitor)[0]  # one optimizer's LRs (a second optimizer's stay metrics)
        return [monitor[first][g] for g in sorted(monitor[first])]
    groups = {}
    for name in names:
        found = _LR_GROUPS.match(name.lower())
        if found:
            groups[int(found.group(1))] = name
    return [groups[g] for g in sorted(groups)]


def optimizer_class(plan: dict[str, tuple[str, int]]) -> str | None:
    """The optimizer class a Lightning LR name gives away (``lr-AdamW`` -> ``AdamW``), if any."""
    for name, (target, _) in plan.items():
        found = _LR_MONITOR.match(name)
        if target == "lr" and found:
            return found.group(1)
    return None


def _metric_name(name: str) -> str:
    """A scalar kept as a metric, renamed if its name is an event field or a step field (an ``lr``
    scalar when ``--map`` chose others for the LR)."""
    return f"{name}_" if name in RESERVED_FIELDS or name in STEP_TARGETS or name == SKIP else name
