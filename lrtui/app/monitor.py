"""The main screen, shared by watch and replay: four charts, the advisor, the system panel and
the status line of one run, and switching between the runs of a directory.

The watch and replay screens (watch.py, replay.py) say where the runs come from and which step
is "now"; everything else is drawn here.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Static

from lrtui.advisor import AdvisorState
from lrtui.app.advisor_panel import actions_label, advisor_text
from lrtui.app.apply_key import ApplyKeyScreen
from lrtui.app.chart_specs import CHART_IDS, Overlaid, chart_specs
from lrtui.app.messages import RunChanged, SystemSampled
from lrtui.app.panels import status_line, system_text
from lrtui.app.run_curves import ChartCurves
from lrtui.app.runs import discover, run_order, run_row, sweep_headline
from lrtui.app.runview import RunView
from lrtui.app.system_source import SystemSource
from lrtui.app.widgets import AdvisorScreen, Chart, RunsScreen, StepAxis
from lrtui.runlog import RunFormatError, finite_float, read_meta
from lrtui.system import GpuReading, SystemSampler

#: Smoothing windows (logged steps) the ``s`` key cycles through; 1 is off.
SMOOTHING_WINDOWS = (50, 200, 1, 10)
#: Terminals fewer rows high than this get the compact system panel (more room for the advice).
COMPACT_BELOW = 30
#: Keys that switch between the runs of a directory.
RUN_ACTIONS = frozenset({"runs", "toggle_overlay", "next_run", "previous_run"})


@dataclass
class MonitorOptions:
    """How the screen runs (the command's options and what tests fix)."""

    refresh: float = 0.5
    clock: Callable[[], float] = time.time  # the status line's clock (tests freeze it)
    sampler_factory: Callable[[], SystemSampler] = SystemSampler
    system_interval: float = 1.0


class MonitorScreen(ApplyKeyScreen):
    """Charts, advisor, system and status of the selected run of ``path`` (a run or a directory)."""

    BINDINGS = [
        Binding("l", "toggle_log", "log"),
        Binding("s", "cycle_smoothing", "smooth"),
        Binding("r", "runs", "runs"),
        Binding("o", "toggle_overlay", "overlay"),
        Binding("a", "advice", "advice", show=False),
        Binding("right_square_bracket", "next_run", "next run", key_display="]", show=False),
        Binding("left_square_bracket", "previous_run", "prev run", key_display="[", show=False),
    ]
    #: True for the replay screen: the status line and the runs list speak of a replay position.
    replay = False

    def __init__(self, path: Path, options: MonitorOptions) -> None:
        super().__init__()  # ApplyKeyScreen: the apply key (apply_key.py)
        self.path = Path(path)
        self.options = options
        self.views: list[RunView] = []
        self.selected: str | None = None  # key of the run shown
        self.is_sweep = False
        self.log_scale = False
        self.smoothing = SMOOTHING_WINDOWS[0]
        self.overlay = False
        self.system: tuple[list[GpuReading] | None, dict[str, Any] | None, str | None] = (None, None, None)
        self.redraws = 0
        self._dirty = True
        self._sources: list[Any] = []
        self.first_shown = threading.Event()  # set once the first chart of a run has been drawn

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="body"):
            with Vertical(id="charts"):
                for chart_id in CHART_IDS:
                    yield Chart(id=chart_id)
                yield StepAxis(id="step-axis")
            with Vertical(id="side"):
                yield Static(id="advisor")
                yield Static(id="system")
        yield from self.compose_bar()
        yield Footer(show_command_palette=False)

    def compose_bar(self) -> ComposeResult:
        """Widgets between the body and the footer (the replay bar)."""
        yield from ()

    def on_mount(self) -> None:
        runs, self.is_sweep = discover(self.path)
        self.views = [RunView(p) for p in runs]
        for view in self.views:  # the LRs, for the order of the runs list (the readers say any error)
            try:
                view.meta = read_meta(view.path)
            except RunFormatError:
                pass
        self.views.sort(key=run_order)
        self.start_reading()
        if self.options.system_interval > 0:
            source = SystemSource(self.options.sampler_factory, self.post_message, self.options.system_interval)
            source.start()
            self._sources.append(source)
        else:
            self.system = (None, None, "local machine not sampled")
        self.set_interval(self.options.refresh, self._tick)
        self.redraw()

    def on_unmount(self) -> None:
        for source in self._sources:
            source.close()
        super().on_unmount()

    def on_resize(self, event: Any) -> None:
        # Bigger terminals: wider side panel (the .tcss says how much).
        self.set_class(event.size.width >= 120, "-wide")
        self._dirty = True

    # -- what the watch and replay screens say -----------------------------------------------

    def start_reading(self) -> None:
        """Start the threads that read the runs in ``self.views``."""
        raise NotImplementedError

    def now_step(self, curves: ChartCurves) -> float:
        """The last step shown: the run's end when watching, the position in a replay."""
        return curves.last_step

    def status_word(self, status: str) -> str:
        return "live" if status == "running" else status

    def catching_up(self, view: RunView) -> bool:
        """True while the advisor's state is behind the step shown."""
        return False

    def tick(self) -> None:
        """Called every refresh before drawing."""

    def draw_bar(self, view: RunView, curves: ChartCurves | None) -> None:
        """Draw what compose_bar added."""

    # -- messages from the reading threads -------------------------------------------------

    def on_run_changed(self, message: RunChanged) -> None:
        self.sort_views()
        self._dirty = True
        if not self.first_shown.is_set():
            self.call_later(self.redraw)  # the first screen does not wait for the next refresh

    def on_system_sampled(self, message: SystemSampled) -> None:
        self.system = (message.gpus, message.host, message.nvml_error)
        self._dirty = True

    # -- the clock ---------------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self.tick()
            if self._dirty:
                self.redraw()
            elif not self.replay and self.view is not None:
                self._draw_status(self.view, self.options.clock())  # "last event ... ago" keeps counting
        except NoMatches:  # the screen is being torn down (quitting): nothing left to draw on
            pass

    # -- runs --------------------------------------------------------------------------------

    @property
    def view(self) -> RunView | None:
        """The run shown."""
        for view in self.views:
            if view.key == self.selected:
                return view
        return self.views[0] if self.views else None

    def sort_views(self) -> None:
        """The runs in LR order (their metadata may have just arrived); the shown run stays shown."""
        shown = self.view
        self.views.sort(key=run_order)
        self.selected = shown.key if shown is not None else None

    def select(self, key: str) -> None:
        """Show run ``key``."""
        self.selected = key
        self.redraw()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in RUN_ACTIONS and len(self.views) < 2:
            return False  # not in the footer; the app's fallback says why the key does nothing
        return super().check_action(action, parameters)

    def now(self) -> float:
        return self.options.clock()

    def mark_dirty(self) -> None:
        self._dirty = True

    def _step_run(self, by: int) -> None:
        if self.views:
            keys = [v.key for v in self.views]
            current = self.view
            at = keys.index(current.key) if current is not None else 0
            self.choose(keys[(at + by) % len(keys)])

    def choose(self, key: str) -> None:
        """The user picked run ``key``."""
        self.select(key)

    def action_next_run(self) -> None:
        self._step_run(1)

    def action_previous_run(self) -> None:
        self._step_run(-1)

    def action_runs(self) -> None:
        def rows() -> list[tuple[str, tuple[str, ...]]]:
            return [(v.key, run_row(v, self.replay)) for v in self.views]

        def summary() -> str | None:
            return sweep_headline(self.views, self.replay, self.options.clock())

        def chosen(key: str | None) -> None:
            if key is not None and key in {v.key for v in self.views}:
                self.choose(key)

        self.app.push_screen(RunsScreen(rows, self.view.key if self.view else None, summary), chosen)

    def action_advice(self) -> None:
        view = self.view
        if view is None:
            return

        def advice() -> tuple[AdvisorState | None, str | None]:
            with view.lock:
                return view.state, view.error or view.advisor_error

        self.app.push_screen(AdvisorScreen(view.name, advice))

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.redraw()

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING_WINDOWS.index(self.smoothing)
        self.smoothing = SMOOTHING_WINDOWS[(i + 1) % len(SMOOTHING_WINDOWS)]
        self.redraw()

    def action_toggle_overlay(self) -> None:
        self.overlay = not self.overlay
        self.redraw()

    # -- drawing -----------------------------------------------------------------------------

    def redraw(self) -> None:
        """Put the selected run's charts, advisor, system and status on the screen."""
        self._dirty = False
        self.redraws += 1
        view = self.view
        if view is None:
            self._show_empty()
            return
        curves = view.curves(self.smoothing) if view.loaded else None
        with view.lock:
            state, error = view.state, view.error
            taken = list(view.data.records.get("action") or [])
        if curves is not None:
            first, last = curves.first_step, self.now_step(curves)
            # never widen the range past the last step shown: a replay must not leak what follows
            x_range = (first, last) if last > first else (first - 0.5, first + 0.5)
        else:
            x_range = (0.0, 1.0)
        taken = [e for e in taken if isinstance(e.get("step"), int) and e["step"] <= x_range[1]]  # not past a replay
        self._draw_charts(curves, x_range, waiting="waiting for the run to start" if view.meta is None
                          else "waiting for steps", actions=taken)
        if curves is not None and not self.first_shown.is_set():
            self.call_after_refresh(self.first_shown.set)
        self.query_one("#step-axis", StepAxis).show(x_range if curves is not None else None)
        panel = self.query_one("#advisor", Static)
        note = self.command_notes.get(view.key)
        panel.update(advisor_text(state, error or view.advisor_error, catching_up=self.catching_up(view),
                                  width=panel.size.width, height=panel.size.height,
                                  notes=[(note.text, note.style)] if note else [], taken=taken))
        self.update_apply_binding()
        self._draw_status(view, self.options.clock())
        self._draw_system(view)
        if view.curves_behind():
            self._dirty = True  # come back on the next refresh for the newer data
        self.draw_bar(view, curves)

    def _show_empty(self) -> None:
        where = f"no runs yet in {self.path}" if not self.replay else f"no runs in {self.path}"
        status = self.query_one("#status", Static)
        status.update(status_line(self.path.name, "waiting", None, None, None, None, where,
                                  width=status.size.width))
        self._draw_charts(None, (0.0, 1.0), waiting="waiting for a run")

    def _draw_charts(self, curves: ChartCurves | None, x_range: tuple[float, float], waiting: str,
                     actions: list[dict[str, Any]] | None = None) -> None:
        overlay = None
        if curves is not None and self.overlay and len(self.views) > 1:
            overlay = []
            for other in self.views:
                c = other.curves(self.smoothing) if other.loaded else None
                if c is not None:
                    lr = other.initial_lr()
                    overlay.append(Overlaid(f"{lr:.3g}" if lr is not None else other.name, c.loss_smooth))
        specs = chart_specs(curves, x_range, log=self.log_scale, smoothing=self.smoothing, overlay=overlay,
                            waiting=waiting, actions=[float(e["step"]) for e in actions or []],
                            actions_label=actions_label(actions or []))
        for chart_id, spec in zip(CHART_IDS, specs):
            self.query_one(f"#{chart_id}", Chart).show(spec)

    def status_step(self, steps: np.ndarray) -> int:
        """How many of the logged ``steps`` are shown (all when watching)."""
        return steps.size

    def _draw_status(self, view: RunView, now: float) -> None:
        with view.lock:
            table = view.data.table("step")
            last_time = view.data.last_time
            status = view.status(now)
        started = finite_float((view.meta or {}).get("started_at"))
        step = steps_per_s = elapsed = None
        steps = table.get("step") if table else None
        times = table.get("time") if table else None
        if steps is not None and times is not None and steps.size:
            n = max(self.status_step(steps), 1)
            step = int(steps[n - 1]) if np.isfinite(steps[n - 1]) else None
            k = max(0, n - 100)
            dt = times[n - 1] - times[k]
            if n - 1 > k and dt > 0:
                steps_per_s = float((steps[n - 1] - steps[k]) / dt)
            if started is not None:
                end = times[n - 1] if (self.replay or status != "running") else now
                elapsed = float(end - started) if math.isfinite(end) else None
        since = now - last_time if not self.replay and last_time is not None else None
        extra = view.error or (f"{view.skipped} bad lines skipped" if view.skipped else "")
        keys = [v.key for v in self.views]
        run_of = f"run {keys.index(view.key) + 1}/{len(keys)}" if len(keys) > 1 and view.key in keys else ""
        widget = self.query_one("#status", Static)
        widget.update(status_line(view.name, self.status_word(status), step, steps_per_s, elapsed, since, extra,
                                  run_of, width=widget.size.width))

    def system_upto(self, steps: np.ndarray) -> int:
        """How many of the run's ``system`` samples (at these steps) are shown."""
        return steps.size

    def _draw_system(self, view: RunView) -> None:
        with view.lock:
            table = view.data.table("system")
        job: list[dict[str, Any]] = []
        job_step = None
        if table and "step" in table and table["step"].size:
            steps = table["step"]
            upto = self.system_upto(steps)
            if upto:
                # the newest sample of each GPU (and of the process) at or before the step shown
                latest: dict[Any, dict[str, Any]] = {}
                for i in range(upto - 1, max(upto - 16, 0) - 1, -1):
                    event = {name: _scalar(col[i]) for name, col in table.items()}
                    gpu = event.get("gpu_index")
                    latest.setdefault(gpu if isinstance(gpu, int) else None, event)
                job = list(latest.values())[::-1]
                newest = float(steps[upto - 1])
                job_step = int(newest) if math.isfinite(newest) else None
        gpus, host, error = self.system
        compact = self.size.height < COMPACT_BELOW
        self.query_one("#system", Static).update(system_text(gpus, host, error, job, job_step, compact))


def _scalar(value: Any) -> Any:
    """A column's value as an event field: an integral float as an int, NaN (missing) as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


__all__ = ["MonitorOptions", "MonitorScreen", "SMOOTHING_WINDOWS"]
