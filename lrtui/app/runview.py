"""One run as the screen sees it: metadata, columns, advisor state, and the curves drawn from them.

A reading thread (live.py, recorded.py, replay_feed.py) changes a RunView under its lock; the
screen only copies references out under the lock and draws from them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrtui.advisor import Advisor, AdvisorState
from lrtui.app.run_curves import ChartCurves, build_curves
from lrtui.runlog import RunData, planned_lr, run_status
from lrtui.text import printable

#: Largest share of one core that rebuilding a growing run's curves may take: after a build
#: that took t seconds, the next waits at least t / CURVES_CPU_SHARE.
CURVES_CPU_SHARE = 0.05


def make_advisor(meta: dict[str, Any]) -> tuple[Advisor | None, str | None]:
    """A fresh advisor for a run, or why there is none (metadata it cannot use)."""
    try:
        return Advisor(meta), None
    except Exception as exc:  # show why, keep the charts
        return None, f"advisor: {exc}"


@dataclass
class RunView:
    """One run: its metadata, columns, advisor state and load progress.

    The reading thread changes ``data``, ``state`` and ``version`` under
    ``lock``; the screen takes the lock only to copy references out.
    """

    path: Path
    meta: dict[str, Any] | None = None
    data: RunData = field(default_factory=RunData)
    state: AdvisorState | None = None
    advisor_error: str | None = None
    error: str | None = None
    skipped: int = 0
    resets: int = 0
    version: int = 0
    loaded: bool = False
    complete: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _curves: tuple[tuple[int, int], ChartCurves] | None = None
    _steps: tuple[int, np.ndarray] | None = None
    _built_at: float = 0.0
    _build_seconds: float = 0.0

    @property
    def key(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        name = self.meta.get("name") if self.meta else None
        if isinstance(name, str) and name:
            return printable(name)
        return printable(self.path.name or str(self.path))

    @property
    def end(self) -> dict[str, Any] | None:
        ends = self.data.records.get("end") or []
        return ends[-1] if ends else None

    def status(self, now: float) -> str:
        """``waiting`` before its metadata exists, else lrtui.runlog.run_status."""
        if self.meta is None:
            return "waiting"
        return run_status(self.meta, self.end, self.data.last_time, now, run_dir=self.path)

    def initial_lr(self) -> float | None:
        """The first param group's initial LR as the run's metadata plans it (a schedule's peak
        or base LR, not a warm-up's first value)."""
        return planned_lr(self.meta)

    def logged_steps(self) -> np.ndarray:
        """The distinct steps with a ``step`` event, sorted (cached until the data changes)."""
        with self.lock:
            version = self.version
            table = self.data.table("step")
        if self._steps is not None and self._steps[0] == version:
            return self._steps[1]
        steps = table.get("step") if table else None
        if steps is None or steps.size == 0:
            result = np.zeros(0)
        elif (bool(np.isfinite(steps[0]) and np.isfinite(steps[-1]))
              and (steps.size < 2 or bool(np.all(steps[1:] > steps[:-1])))):
            result = steps  # the usual case: finite and already increasing, no sort needed
        else:
            result = np.unique(steps[np.isfinite(steps)])
        self._steps = (version, result)
        return result

    def curves_behind(self) -> bool:
        """True when the curves last built are older than the data (rebuilds are rationed)."""
        return self._curves is not None and self._curves[0][0] != self.version

    def curves(self, smoothing: int) -> ChartCurves | None:
        """Chart curves for the current data (cached until the data or the window changes)."""
        with self.lock:
            version = self.version
            steps = self.data.table("step")
            sharp = self.data.table("sharpness")
            # rows of no value (null, absent): not drawn; a NaN elsewhere was written as NaN (marked)
            missing = {"step": self.data.missing("step"), "sharpness": self.data.missing("sharpness")}
        if self._curves is not None and self._curves[0] == (version, smoothing):
            return self._curves[1]
        now = time.monotonic()
        if (self._curves is not None and self._curves[0][1] == smoothing
                and now - self._built_at < self._build_seconds / CURVES_CPU_SHARE):
            # A long live run: rebuilding on every batch would eat the CPU; show the curves of
            # a moment ago and rebuild once the time since the last build allows it.
            return self._curves[1]
        if not steps or "step" not in steps:
            return None
        curves = build_curves(self.meta or {}, steps, sharp, smoothing, missing)
        self._build_seconds = time.monotonic() - now
        self._built_at = now
        self._curves = ((version, smoothing), curves)
        return curves


__all__ = ["CURVES_CPU_SHARE", "RunView", "make_advisor"]
