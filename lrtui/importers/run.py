"""Scalar series from any logger to the events of a run directory, written by ``lrtui.runlog``."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from lrtui.errors import UserError
from lrtui.importers.names import SKIP, STEP_TARGETS, assign, optimizer_class
from lrtui.runlog import RunWriter

#: One logged scalar: (step, wall time or None, value), in the order it was logged.
Point = tuple[int, "float | None", float]
#: Scalar name -> its points.
Series = dict[str, list[Point]]


def build_events(series: Series, overrides: dict[str, str], *, default_time: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events in step order, a description of the mapping for ``meta.json``).

    Step fields come from the scalars ``names.assign`` maps to them; every other scalar becomes a
    ``metric`` event field at its step. A step logged twice (a restarted job) keeps its last value.
    The LR is carried forward between the steps it was logged at (the LR in force); other fields
    are only where they were logged. Raises a one-line UserError when no scalar is a step field.
    """
    unknown = [name for name in overrides if name not in series]
    if unknown:
        raise UserError(f"--map names {', '.join(map(repr, unknown))}, which the log does not have "
                        f"(it has: {_listing(series)})")
    plan = assign(series, overrides)
    if not any(target in STEP_TARGETS for target, _ in plan.values()):
        raise UserError(f"no scalar is a loss, gradient norm or LR (found: {_listing(series)}); "
                        "say which with --map NAME=loss")
    steps: dict[int, dict[str, Any]] = {}
    metrics: dict[int, dict[str, Any]] = {}
    lr_groups = 1 + max((group for target, group in plan.values() if target == "lr"), default=-1)
    lrs: dict[int, dict[int, float]] = {}
    times: dict[int, float] = {}
    for name, points in series.items():
        target, group = plan[name]
        if target == SKIP:
            continue
        for step, wall, value in points:
            if step < 0:
                continue
            if wall is not None and math.isfinite(wall):
                times[step] = max(times.get(step, wall), wall)
            if target == "lr":
                lrs.setdefault(step, {})[group] = value
            elif target in STEP_TARGETS:
                steps.setdefault(step, {})[target] = value
            else:
                metrics.setdefault(step, {})[target] = value
    events: list[dict[str, Any]] = []
    carried: list[float | None] = [None] * lr_groups
    for step in sorted(set(steps) | set(lrs) | set(metrics)):
        at = times.get(step, default_time)
        for group, value in lrs.get(step, {}).items():
            carried[group] = value
        fields = steps.get(step)
        if fields is not None or step in lrs:
            event: dict[str, Any] = {"kind": "step", "step": step, "time": at}
            for name in STEP_TARGETS[:-1]:
                if fields and name in fields:
                    event[name] = fields[name]
            if lr_groups:
                event["lr"] = list(carried)
            events.append(event)
        if step in metrics:
            events.append({"kind": "metric", "step": step, "time": at, **metrics[step]})
    described = {name: target for name, (target, _) in plan.items()}
    found_class = optimizer_class(plan)
    return events, {"scalars": described, **({"optimizer_class": found_class} if found_class else {})}


def write_run(run_dir: Path, events: list[dict[str, Any]], *, source: str, imported_from: str, mapping: dict[str, Any]) -> None:
    """Write a new run directory with ``events`` (never into an existing, non-empty directory)."""
    check_new_run_dir(run_dir)
    times = [e["time"] for e in events]
    meta = {
        "name": run_dir.name,
        "started_at": min(times) if times else time.time(),
        "pid": None,  # no live process: the end record says the run is over
        "world_size": 1,
        "extra": {"imported_from": imported_from, "source": source, **mapping},
    }
    errors: list[str] = []
    writer = RunWriter(run_dir, meta, on_error=errors.append)
    for event in events:
        writer.write_event(event)
    writer.close("finished")
    if errors:
        raise UserError(errors[0].split("; logging disabled")[0])


def check_new_run_dir(run_dir: Path) -> None:
    """A one-line UserError unless ``run_dir`` is new (or an empty directory): nothing is overwritten."""
    if os.path.lexists(run_dir):
        if not run_dir.is_dir() or run_dir.is_symlink():
            raise UserError(f"{run_dir}: exists and is not a directory; give a new run directory")
        if any(run_dir.iterdir()):
            raise UserError(f"{run_dir}: already exists and is not empty; refusing to overwrite it (give a new run directory)")


def _listing(series: Series, most: int = 12) -> str:
    names = list(series)
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "") if names else "nothing"
