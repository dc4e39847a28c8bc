"""``lrtui replay``: the main screen playing recorded runs, with play/pause, speed and seek.

The replay position is a step shared by every run of a directory; the charts end at it and
each run's advisor is brought to it (replay_feed.py), so nothing after it is ever shown.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from lrtui.app.messages import RunChanged
from lrtui.app.monitor import MonitorOptions, MonitorScreen
from lrtui.app.panels import replay_bar
from lrtui.app.recorded import load_into
from lrtui.app.replay_feed import ReplayFeeder
from lrtui.app.run_curves import ChartCurves
from lrtui.app.runview import RunView

#: Logged steps per refresh at speed 1 are the run's length divided by this, so a replay at
#: speed 1 lasts this many refreshes whatever the run's length.
REPLAY_REFRESHES = 240


class ReplayScreen(MonitorScreen):
    """Plays recorded runs: the charts, advisor and status as they were at the replay position."""

    BINDINGS = [
        Binding("space", "play_pause", "play"),
        Binding("plus,equals_sign", "faster", "speed", key_display="+/-"),
        Binding("minus", "slower", "slower", show=False),
        Binding("home,g", "jump_start", "start", show=False),
        Binding("end,G", "jump_end", "end", show=False),
        Binding("left", "step_back", "step back", show=False),
        Binding("right", "step_forward", "step", show=False),
        Binding("pageup", "page_back", "back", show=False),
        Binding("pagedown", "page_forward", "forward", show=False),
    ]
    replay = True

    def __init__(self, path: Path, options: MonitorOptions, *, speed: float = 1.0, autoplay: bool = True,
                 start_at_end: bool = False) -> None:
        super().__init__(path, options)
        self.speed = speed
        self.playing = autoplay
        self.start_at_end = start_at_end
        self.position: float | None = None  # replay position (a step); None until loaded
        #: The run whose end was asked for (End) before it was read to its end: the position
        #: goes on to that end as the rest of the run comes in.
        self._end_pending: str | None = None
        self._feeder = ReplayFeeder(self.post_message)

    def compose_bar(self) -> ComposeResult:
        yield Static(id="replay-bar")

    def start_reading(self) -> None:
        self._sources.append(self._feeder)
        self.run_worker(self._load_recorded, thread=True, name="load runs", exit_on_error=False)

    def _load_recorded(self) -> None:
        """Load every recorded run (the first shown run first) chunk by chunk, in a worker thread."""
        shown = self.view
        views = sorted(self.views, key=lambda v: v is not shown)
        for i, view in enumerate(views):
            self._feeder.add(view)
            if i == 0:
                self._feeder.start()
            load_into(view, functools.partial(self._changed, view.key),
                      first_shown=self.first_shown if i == 0 else None)
            self._feeder.loaded(view.key)

    def _changed(self, key: str) -> None:
        self.post_message(RunChanged(key))

    # -- what the monitor asks ---------------------------------------------------------------

    def now_step(self, curves: ChartCurves) -> float:
        return self.position if self.position is not None else curves.last_step

    def status_word(self, status: str) -> str:
        return f"replay · {status}"

    def catching_up(self, view: RunView) -> bool:
        state, position = view.state, self.position
        return (state is not None and position is not None and state.step is not None
                and state.step < position - 0.5 and self._feeder.catching_up(view.key, position))

    def status_step(self, steps: np.ndarray) -> int:
        if self.position is None:
            return steps.size
        return int(np.searchsorted(steps, self.position, side="right"))

    def system_upto(self, steps: np.ndarray) -> int:
        return self.status_step(steps)

    def tick(self) -> None:
        if self.playing and self.position is not None:
            self._move(self._stride() * self.speed)

    def draw_bar(self, view: RunView, curves: ChartCurves | None) -> None:
        if curves is not None and self.position is not None:
            bar = self.query_one("#replay-bar", Static)
            bar.update(replay_bar(self.playing, self.speed, self.position, curves.first_step, curves.last_step,
                                  bar.size.width or 80))

    def on_run_changed(self, message: RunChanged) -> None:
        super().on_run_changed(message)
        view = self.view
        if view is None or message.key != view.key:
            return
        if self.position is None:
            # the start is known from the first chunk; the end only once the run is read
            curves = view.curves(self.smoothing) if (view.complete or not self.start_at_end) else None
            if curves is not None:
                self.position = curves.last_step if self.start_at_end else curves.first_step
                self._seek()
        elif self._end_pending == view.key:
            self._to_end()

    def select(self, key: str) -> None:
        """Show run ``key`` (the replay position, a step, stays where it is)."""
        self.selected = key
        self._end_pending = None
        self._seek()
        self.redraw()

    # -- the replay position -----------------------------------------------------------------

    def _steps(self) -> np.ndarray:
        view = self.view
        return view.logged_steps() if view is not None else np.zeros(0)

    def _stride(self) -> float:
        return max(1.0, len(self._steps()) / REPLAY_REFRESHES)

    def _move(self, logged_steps: float) -> None:
        """Move the replay position by a number of logged steps (negative: back)."""
        self._end_pending = None
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
        if self.position is not None:
            view = self.view
            self._feeder.seek(self.position, view.key if view else None)
        self._dirty = True

    def set_position(self, step: float) -> None:
        """Put the replay at ``step`` (clamped to the run)."""
        self._end_pending = None
        steps = self._steps()
        if steps.size == 0:
            return
        self.position = float(np.clip(step, steps[0], steps[-1]))
        self._seek()

    # -- keys --------------------------------------------------------------------------------

    def action_play_pause(self) -> None:
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
        if steps.size:
            self.set_position(steps[0])

    def action_jump_end(self) -> None:
        """To the shown run's last step, and paused; a run still being read (a key pressed
        as the replay opens) is followed to its end as the rest of it comes in."""
        self.playing = False
        self._dirty = True
        self._to_end()

    def _to_end(self) -> None:
        view, steps = self.view, self._steps()
        pending = view.key if view is not None and not view.complete else None
        if steps.size:
            self.set_position(steps[-1])
        self._end_pending = pending

    def action_step_back(self) -> None:
        self.playing = False
        self._move(-1)

    def action_step_forward(self) -> None:
        self.playing = False
        self._move(1)

    def action_page_back(self) -> None:
        self._move(-max(1, len(self._steps()) // 20))

    def action_page_forward(self) -> None:
        self._move(max(1, len(self._steps()) // 20))


__all__ = ["REPLAY_REFRESHES", "ReplayScreen"]
