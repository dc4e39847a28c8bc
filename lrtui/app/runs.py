"""The runs of a directory as the screen lists them: which, in what order, and the sweep's verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrtui.advisor import summarize_sweep
from lrtui.app.runview import RunView
from lrtui.runlog import find_runs

#: Statuses of a run that is being written now.
LIVE_STATUSES = ("running",)


def discover(path: Path) -> tuple[list[Path], bool]:
    """(runs, is_sweep): the run at ``path``, or the runs inside it."""
    runs = find_runs(path)
    is_sweep = not (runs and runs[0] == path)
    return runs, is_sweep


def run_order(view: RunView) -> tuple[Any, ...]:
    """Sort key of the runs list: a sweep's runs by initial LR (runs without one last), then name."""
    lr = view.initial_lr()
    return (lr is None, lr if lr is not None else 0.0, view.name, view.key)


def live_run(views: list[RunView], now: float) -> RunView | None:
    """The run being written that wrote last, or None when no run is live."""
    live = []
    for view in views:
        with view.lock:
            status, last = view.status(now), view.data.last_time
        if status in LIVE_STATUSES:
            live.append((last if last is not None else 0.0, view.key, view))
    return max(live, key=lambda t: (t[0], t[1]))[2] if live else None


def run_row(view: RunView, replay: bool) -> tuple[str, str, str, str, str]:
    """The runs table's cells for one run: name, LR, step, regime now, and the regime of its
    first LR (what a sweep classifies it by: after a fine-tuning phase the two differ)."""
    lr = view.initial_lr()
    with view.lock:
        state = view.state
        last = view.data.last_step
    step = state.step if replay and state is not None else last
    regime = state.regime if state is not None else ("-" if view.meta else "waiting")
    first = state.segments[0].regime if state is not None and state.segments else "-"
    return (view.name, f"{lr:.3g}" if lr is not None else "-", f"{step:,}" if step is not None else "-",
            str(regime), str(first))


def sweep_headline(views: list[RunView], replay: bool, now: float) -> str | None:
    """The sweep's verdict (convergence threshold, band, winners) from each run's advisor state
    as shown: in a replay, at the replay position (metrics after it are not used, and a run
    that goes on past it counts as still running); None for fewer than two runs with a state."""
    entries, running = [], []
    for view in views:
        with view.lock:
            state, meta = view.state, view.meta
            metrics = list(view.data.records.get("metric") or [])
            last = view.data.last_step
        if state is None or meta is None:
            continue
        if replay:
            at = state.step
            metrics = [m for m in metrics if m.get("step").__class__ is int and at is not None and m["step"] <= at]
            running.append(at is None or last is None or at < last)
        else:
            running.append(view.status(now) in ("running", "stale"))
        entries.append((meta | {"name": view.name}, state, metrics))
    if len(entries) < 2:
        return None
    try:
        return "sweep: " + summarize_sweep(entries, running).headline()
    except Exception as exc:  # what the runs hold must not take the runs list down
        return f"sweep: no verdict ({type(exc).__name__}: {exc})"


__all__ = ["LIVE_STATUSES", "discover", "live_run", "run_order", "run_row", "sweep_headline"]
