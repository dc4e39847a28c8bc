"""The lrtui screen: one Textual app that watches live runs or replays recorded ones."""

from __future__ import annotations

import functools
import math
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Footer, Static

from lrtui.app.chart import ChartSpec, Series
from lrtui.app.messages import RunChanged, RunsFound, SystemSampled
from lrtui.app.panels import advisor_text, replay_bar, status_line, system_text
from lrtui.app.runs import (
    DirectoryScanner,
    LiveSource,
    ReplayFeeder,
    RunView,
    SystemSource,
    discover,
    load_into,
    sweep_headline,
    wall_clock,
)
from lrtui.app.widgets import Chart, HelpScreen, RunsScreen, StepAxis
from lrtui.runlog.reader import finite_float
from lrtui.system import GpuReading, SystemSampler

#: Smoothing windows (logged steps) the ``s`` key cycles through; 1 is off.
SMOOTHING_WINDOWS = (50, 200, 1, 10)
#: Colours of the loss curves of a sweep overlay and of LR groups.
CYCLE = ("green", "magenta", "blue", "red", "cyan", "yellow", "bright_green", "bright_magenta")
#: Replay: logged steps per refresh at speed 1 are the run's length divided by this, so a
#: replay at speed 1 lasts this many refreshes whatever the run's length.
REPLAY_REFRESHES = 240


class LrtuiApp(App[int]):
    """Charts, advisor, system and status of one run or a sweep, live (watch) or recorded (replay).

    Args:
        path: a run directory or a directory of runs.
        mode: ``"watch"`` or ``"replay"``.
        refresh: seconds between screen refreshes.
        poll: watch by polling instead of inotify.
        speed: replay speed multiplier.
        clock: the time the status line uses (tests freeze it).
        sampler_factory: makes the SystemSampler (tests inject a fake NVML through it).
        autoplay: replay starts playing (else paused).
        start_at_end: replay starts at the end of the run.
        system_interval: seconds between local system samples; 0 turns sampling off.
    """

    CSS_PATH = "lrtui.tcss"
    TITLE = "lrtui"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("space", "play_pause", "play/pause"),
        Binding("plus,equals_sign", "faster", "faster", key_display="+"),
        Binding("minus", "slower", "slower", key_display="-"),
        Binding("home,g", "jump_start", "start", show=False),
        Binding("end,G", "jump_end", "end", show=False),
        Binding("left", "step_back", "step back", show=False),
        Binding("right", "step_forward", "step", show=False),
        Binding("pageup", "page_back", "back", show=False),
        Binding("pagedown", "page_forward", "forward", show=False),
        Binding("l", "toggle_log", "log"),
        Binding("s", "cycle_smoothing", "smooth"),
        Binding("r", "runs", "runs"),
        Binding("right_square_bracket", "next_run", "next run", key_display="]", show=False),
        Binding("left_square_bracket", "previous_run", "prev run", key_display="[", show=False),
        Binding("o", "toggle_overlay", "overlay"),
        Binding("d", "toggle_dark", "dark/light", show=False),
    ]

    def __init__(
        self,
        path: Path,
        mode: str,
        *,
        refresh: float = 0.5,
        poll: bool = False,
        speed: float = 1.0,
        clock: Callable[[], float] = wall_clock,
        sampler_factory: Callable[[], SystemSampler] = SystemSampler,
        autoplay: bool = True,
        start_at_end: bool = False,
        system_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.mode = mode
        self.refresh_seconds = refresh
        self.poll = poll
        self.speed = speed
        self.clock = clock
        self.sampler_factory = sampler_factory
        self.playing = autoplay and mode == "replay"
        self.start_at_end = start_at_end
        self.system_interval = system_interval
        self.views: list[RunView] = []
        self.selected = 0
        self.is_sweep = False
        self.log_scale = False
        self.smoothing = SMOOTHING_WINDOWS[0]
        self.overlay = False
        self.position: float | None = None  # replay position (a step); None until loaded
        self.system: tuple[list[GpuReading] | None, dict[str, Any] | None, str | None] = (None, None, None)
        self.redraws = 0
        self._dirty = True
        self._sources: list[Any] = []
        self._feeder: ReplayFeeder | None = None
        self._first_shown = threading.Event()  # set once a chart has been drawn

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="body"):
            with Vertical(id="charts"):
                yield Chart(id="loss-chart")
                yield Chart(id="grad-chart")
                yield Chart(id="sharpness-chart")
                yield Chart(id="lr-chart")
                yield StepAxis(id="step-axis")
            with Vertical(id="side"):
                yield Static(id="advisor")
                yield Static(id="system")
        yield Static(id="replay-bar")
        yield Footer()

    def on_mount(self) -> None:
        self._part("#replay-bar").display = self.mode == "replay"
        runs, self.is_sweep = discover(self.path)
        self.views = [RunView(p) for p in runs]
        if self.mode == "watch" and not self.views and not self.path.is_dir():
            self.views = [RunView(self.path)]  # a run that is about to start: wait for it
            self.is_sweep = False
        if self.mode == "watch":
            for view in self.views:
                self._follow(view)
            if self.is_sweep:
                scanner = DirectoryScanner(self.path, self._on_found)
                scanner.start([v.path for v in self.views])
                self._sources.append(scanner)
        else:
            self._feeder = ReplayFeeder(self._notify)
            self._sources.append(self._feeder)
            self.run_worker(self._load_recorded, thread=True, name="load runs", exit_on_error=False)
        if self.system_interval > 0:
            source = SystemSource(self.sampler_factory, self._on_system, self.system_interval)
            source.start()
            self._sources.append(source)
        else:
            self.system = (None, None, "local machine not sampled")
        self.set_interval(self.refresh_seconds, self._tick)
        self.redraw()

    def _part(self, selector: str, kind: type[Any] = Widget) -> Any:
        """A widget of the main screen (queries on the app go to whatever screen is on top)."""
        return self.screen_stack[0].query_one(selector, kind)

    def on_resize(self, event: Any) -> None:
        # Bigger terminals: wider side panel (the .tcss says how much).
        self.set_class(event.size.width >= 120, "-wide")

    def _on_found(self, paths: list[Path]) -> None:
        self.post_message(RunsFound(paths))

    def _notify(self, key: str) -> None:
        self.post_message(RunChanged(key))

    def _on_system(self, gpus: list[GpuReading], host: dict[str, Any], error: str | None) -> None:
        self.post_message(SystemSampled(gpus, host, error))

    def _follow(self, view: RunView) -> None:
        source = LiveSource(view, self._notify, use_inotify=not self.poll)
        source.start()
        self._sources.append(source)

    def _load_recorded(self) -> None:
        """Load every recorded run (the first shown run first) chunk by chunk, in a worker thread."""
        assert self._feeder is not None
        for i, view in enumerate(list(self.views)):
            self._feeder.add(view)
            if i == 0:
                self._feeder.start()
            load_into(view, functools.partial(self._notify, view.key),
                      first_shown=self._first_shown if i == 0 else None)
            self._feeder.loaded(view.key)

    def on_unmount(self) -> None:
        for source in self._sources:
            source.close()

    # -- messages from the reading threads -------------------------------------------------

    def on_run_changed(self, message: RunChanged) -> None:
        self._dirty = True
        if not self._first_shown.is_set():
            self.call_later(self.redraw)  # the first screen does not wait for the next refresh
        view = self.view
        if self.mode == "replay" and view is not None and message.key == view.key and self.position is None:
            # the start is known from the first chunk; the end only once the run is read
            curves = view.curves(self.smoothing) if (view.complete or not self.start_at_end) else None
            if curves is not None:
                self.position = curves.last_step if self.start_at_end else curves.first_step
                self._seek()

    def on_runs_found(self, message: RunsFound) -> None:
        known = {v.path for v in self.views}
        for path in message.paths:
            if path not in known:
                view = RunView(path)
                self.views.append(view)
                self._follow(view)
        self.views.sort(key=lambda v: v.path.name)
        self._dirty = True

    def on_system_sampled(self, message: SystemSampled) -> None:
        self.system = (message.gpus, message.host, message.nvml_error)
        self._dirty = True

    # -- the clock ---------------------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._advance_and_draw()
        except NoMatches:  # the screen is being torn down (quitting): nothing left to draw on
            pass

    def _advance_and_draw(self) -> None:
        if self.mode == "replay" and self.playing and self.position is not None:
            self._move(self._replay_stride() * self.speed)
        if self._dirty:
            self.redraw()
        elif self.mode == "watch" and self.view is not None:
            self._draw_status(self.view, self.clock())  # "last event ... ago" keeps counting

    @property
    def view(self) -> RunView | None:
        return self.views[self.selected] if self.views else None

    # -- replay position ---------------------------------------------------------------------

    def _steps(self) -> np.ndarray:
        view = self.view
        return view.logged_steps() if view is not None else np.zeros(0)

    def _replay_stride(self) -> float:
        return max(1.0, len(self._steps()) / REPLAY_REFRESHES)

    def _move(self, logged_steps: float) -> None:
        """Move the replay position by a number of logged steps (negative: back)."""
        steps = self._steps()
        if steps.size == 0 or self.position is None:
            return
        at = int(np.searchsorted(steps, self.position, side="right")) - 1
        target = int(np.clip(at + int(round(logged_steps)) if logged_steps else at, 0, steps.size - 1))
        if logged_steps > 0 and target == steps.size - 1 and at >= steps.size - 1:
            self.playing = False  # reached the end
        self.position = float(steps[target])
        self._seek()

    def _seek(self) -> None:
        if self._feeder is not None and self.position is not None:
            view = self.view
            self._feeder.seek(self.position, view.key if view else None)
        self._dirty = True

    def set_position(self, step: float) -> None:
        """Put the replay at ``step`` (clamped to the run)."""
        steps = self._steps()
        if steps.size == 0:
            return
        self.position = float(np.clip(step, steps[0], steps[-1]))
        self._seek()

    # -- actions -----------------------------------------------------------------------------

    #: Actions that only mean something in a replay (hidden from the Footer when watching).
    REPLAY_ACTIONS = frozenset({"play_pause", "faster", "slower", "jump_start", "jump_end", "step_back",
                                "step_forward", "page_back", "page_forward"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.REPLAY_ACTIONS and self.mode != "replay":
            return False
        if action in ("toggle_overlay", "next_run", "previous_run", "runs") and len(self.views) < 2:
            return None  # shown greyed out: there is one run
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_play_pause(self) -> None:
        if self.mode == "replay":
            steps = self._steps()
            if not self.playing and steps.size and self.position == steps[-1]:
                self.position = float(steps[0])  # play again from the start
                self._seek()
            self.playing = not self.playing
            self._dirty = True

    def action_faster(self) -> None:
        self.speed = min(self.speed * 2, 1024.0)
        self._dirty = True

    def action_slower(self) -> None:
        self.speed = max(self.speed / 2, 1 / 64)
        self._dirty = True

    def action_jump_start(self) -> None:
        steps = self._steps()
        if self.mode == "replay" and steps.size:
            self.set_position(steps[0])

    def action_jump_end(self) -> None:
        steps = self._steps()
        if self.mode == "replay" and steps.size:
            self.set_position(steps[-1])
            self.playing = False

    def action_step_back(self) -> None:
        if self.mode == "replay":
            self.playing = False
            self._move(-1)

    def action_step_forward(self) -> None:
        if self.mode == "replay":
            self.playing = False
            self._move(1)

    def action_page_back(self) -> None:
        if self.mode == "replay":
            self._move(-max(1, len(self._steps()) // 20))

    def action_page_forward(self) -> None:
        if self.mode == "replay":
            self._move(max(1, len(self._steps()) // 20))

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

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_next_run(self) -> None:
        self.select_run((self.selected + 1) % max(len(self.views), 1))

    def action_previous_run(self) -> None:
        self.select_run((self.selected - 1) % max(len(self.views), 1))

    def action_runs(self) -> None:
        rows = [(v.key, self.run_row(v)) for v in self.views]
        current = self.view.key if self.view else None

        def chosen(key: str | None) -> None:
            if key is not None:
                keys = [v.key for v in self.views]
                if key in keys:
                    self.select_run(keys.index(key))

        summary = sweep_headline(self.views, self.mode == "replay", self.clock())
        self.push_screen(RunsScreen(rows, current, summary), chosen)

    def select_run(self, index: int) -> None:
        """Show run ``index`` (the replay position, a step, stays where it is)."""
        if not self.views:
            return
        self.selected = index
        if self.mode == "replay":
            self._seek()
        self.redraw()

    def run_row(self, view: RunView) -> tuple[str, str, str, str, str]:
        """The runs table's cells for one run: name, LR, step, regime now, and the regime of its
        first LR (what a sweep classifies it by: after a fine-tuning phase the two differ)."""
        lr = view.initial_lr()
        with view.lock:
            state = view.state
            last = view.data.last_step
        step = getattr(state, "step", None) if self.mode == "replay" else last
        regime = getattr(state, "regime", None) or ("-" if view.meta else "waiting")
        segments = getattr(state, "segments", None)
        first = segments[0].regime if segments else "-"
        return (view.name, f"{lr:.3g}" if lr is not None else "-", f"{step:,}" if step is not None else "-",
                str(regime), str(first))

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
        now = self.clock()
        if curves is not None:
            first = curves.first_step
            last = self.position if (self.mode == "replay" and self.position is not None) else curves.last_step
            # never widen the range past the last step shown: a replay must not leak what follows
            x_range = (first, last) if last > first else (first - 0.5, first + 0.5)
            self._draw_charts(view, curves, x_range)
            if not self._first_shown.is_set():
                self.call_after_refresh(self._first_shown.set)
            self._part("#step-axis", StepAxis).show(x_range)
        position = self.position if self.mode == "replay" else None
        feed_behind = (self.mode == "replay" and state is not None and position is not None
                       and getattr(state, "step", position) is not None
                       and getattr(state, "step", position) < position - 0.5
                       and self._feeder is not None and self._feeder.feeds.get(view.key) is not None
                       and self._feeder.feeds[view.key].position != position)
        self._part("#advisor", Static).update(
            advisor_text(state, error or view.advisor_error, catching_up=feed_behind))
        self._draw_status(view, now)
        self._draw_system(view)
        if view.curves_behind():
            self._dirty = True  # come back on the next refresh for the newer data
        if self.mode == "replay" and curves is not None and self.position is not None:
            bar = self._part("#replay-bar", Static)
            bar.update(replay_bar(self.playing, self.speed, self.position, curves.first_step,
                                  curves.last_step, bar.size.width or 80))

    def _show_empty(self) -> None:
        where = f"no runs yet in {self.path}" if self.mode == "watch" else f"no runs in {self.path}"
        self._part("#status", Static).update(status_line(self.path.name, "waiting", None, None, None, None, where))

    def _draw_charts(self, view: RunView, curves: Any, x_range: tuple[float, float]) -> None:
        window = "unsmoothed" if self.smoothing == 1 else f"mean of last {self.smoothing} steps"
        if self.overlay and len(self.views) > 1:
            series = []
            for i, other in enumerate(self.views):
                c = other.curves(self.smoothing) if other.loaded else None
                if c is not None:
                    lr = other.initial_lr()
                    label = f"{lr:.3g}" if lr is not None else other.name
                    series.append(Series(c.loss_smooth, CYCLE[i % len(CYCLE)], label, mark_non_finite=True))
            loss = ChartSpec("loss, sweep by LR", series, x_range, self.log_scale, window)
        else:
            loss = ChartSpec("loss", [
                Series(curves.loss, "bright_black", "raw", mark_non_finite=True),
                Series(curves.loss_smooth, "green", "smoothed"),
            ], x_range, self.log_scale, window)
        self._part("#loss-chart", Chart).show(loss)
        grad = ChartSpec("gradient norm", [Series(curves.grad_norm, "magenta", "", mark_non_finite=True)],
                         x_range, self.log_scale)
        self._part("#grad-chart", Chart).show(grad)
        sharp_series = [Series(c, CYCLE[(k + 2) % len(CYCLE)], method)
                        for k, (method, c) in enumerate(curves.sharpness.items())]
        if curves.threshold is not None:
            sharp_series.append(Series(curves.threshold, "red", "stability threshold"))
        note = "" if curves.sharpness else "not measured"
        self._part("#sharpness-chart", Chart).show(
            ChartSpec("sharpness", sharp_series, x_range, self.log_scale, note))
        lr_series = [Series(c, CYCLE[g % len(CYCLE)], f"group {g}" if len(curves.lr) > 1 else "")
                     for g, c in enumerate(curves.lr)]
        self._part("#lr-chart", Chart).show(ChartSpec("learning rate", lr_series, x_range, False))

    def _draw_status(self, view: RunView, now: float) -> None:
        with view.lock:
            table = view.data.table("step")
            last_time = view.data.last_time
            status = view.status(now)
        started = (view.meta or {}).get("started_at")
        step = steps_per_s = elapsed = since = None
        steps = table.get("step") if table else None
        times = table.get("time") if table else None
        if steps is not None and times is not None and steps.size:
            if self.mode == "replay" and self.position is not None:
                n = int(np.searchsorted(steps, self.position, side="right"))
                n = max(n, 1)
            else:
                n = steps.size
            step = int(steps[n - 1]) if np.isfinite(steps[n - 1]) else None
            k = max(0, n - 100)
            dt = times[n - 1] - times[k]
            if n - 1 > k and dt > 0:
                steps_per_s = float((steps[n - 1] - steps[k]) / dt)
            started = finite_float(started)
            if started is not None:
                end = times[n - 1] if (self.mode == "replay" or status != "running") else now
                elapsed = float(end - started)
        if self.mode == "watch" and last_time is not None:
            since = now - last_time
        if self.mode == "replay":
            word = f"replay · {status}"
        else:
            word = "live" if status == "running" else status
        extra = ""
        if view.error:
            extra = view.error
        elif view.skipped:
            extra = f"{view.skipped} bad lines skipped"
        if len(self.views) > 1:
            extra = f"run {self.selected + 1}/{len(self.views)} " + extra
        self._part("#status", Static).update(
            status_line(view.name, word, step, steps_per_s, elapsed, since, extra))

    def _draw_system(self, view: RunView) -> None:
        with view.lock:
            table = view.data.table("system")
        job: list[dict[str, Any]] = []
        job_step = None
        if table and "step" in table and table["step"].size:
            steps = table["step"]
            upto = steps.size
            if self.mode == "replay" and self.position is not None:
                upto = int(np.searchsorted(steps, self.position, side="right"))
            if upto:
                # the newest sample of each GPU (and of the process) at or before the position
                latest: dict[Any, dict[str, Any]] = {}
                for i in range(upto - 1, max(upto - 16, 0) - 1, -1):
                    event = {name: _scalar(col[i]) for name, col in table.items()}
                    latest.setdefault(event.get("gpu_index"), event)
                job = list(latest.values())[::-1]
                newest = float(steps[upto - 1])
                job_step = int(newest) if math.isfinite(newest) else None
        gpus, host, error = self.system
        self._part("#system", Static).update(system_text(gpus, host, error, job, job_step))


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


__all__ = ["LrtuiApp"]
