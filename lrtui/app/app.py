"""The lrtui app: the watch or replay screen, and the keys that work everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from lrtui.app.apply_key import APPLY_KEY
from lrtui.app.monitor import MonitorOptions, MonitorScreen
from lrtui.app.replay import ReplayScreen
from lrtui.app.runview import RunView
from lrtui.app.watch import WatchScreen
from lrtui.app.widgets import HelpScreen
from lrtui.system import SystemSampler

#: What ``r``, ``o``, ``[`` and ``]`` say on a screen of one run.
ONE_RUN = "one run here: r, o, [ and ] work on a directory of runs (lrtui watch DIR, lrtui replay DIR)"


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
        Binding("d", "toggle_dark", "dark/light", show=False),
        # on a screen of one run the screen's own bindings for these keys step aside
        Binding("r,o,left_square_bracket,right_square_bracket", "one_run", show=False),
        # likewise where the screen's apply key cannot act: say why
        Binding(APPLY_KEY, "explain_apply", show=False),
    ]

    def __init__(
        self,
        path: Path,
        mode: str,
        *,
        refresh: float = 0.5,
        poll: bool = False,
        speed: float = 1.0,
        clock: Callable[[], float] | None = None,
        sampler_factory: Callable[[], SystemSampler] = SystemSampler,
        autoplay: bool = True,
        start_at_end: bool = False,
        system_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("watch", "replay"):
            raise ValueError(f"mode must be watch or replay, not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        options = MonitorOptions(refresh=refresh, sampler_factory=sampler_factory, system_interval=system_interval)
        if clock is not None:
            options.clock = clock
        self.monitor: MonitorScreen
        if mode == "replay":
            self.monitor = ReplayScreen(self.path, options, speed=speed, autoplay=autoplay, start_at_end=start_at_end)
        else:
            self.monitor = WatchScreen(self.path, options, poll=poll)

    def get_default_screen(self) -> Screen:
        return self.monitor

    # The main screen's state, for tests, benchmarks and scripts that drive the app.

    @property
    def view(self) -> RunView | None:
        """The run shown."""
        return self.monitor.view

    @property
    def views(self) -> list[RunView]:
        return self.monitor.views

    @property
    def position(self) -> float | None:
        """The replay position (None when watching, or before the run is read)."""
        return self.monitor.position if isinstance(self.monitor, ReplayScreen) else None

    @property
    def log_scale(self) -> bool:
        return self.monitor.log_scale

    @log_scale.setter
    def log_scale(self, value: bool) -> None:
        self.monitor.log_scale = value

    @property
    def redraws(self) -> int:
        return self.monitor.redraws

    def redraw(self) -> None:
        self.monitor.redraw()

    def set_position(self, step: float) -> None:
        """Put a replay at ``step``."""
        if isinstance(self.monitor, ReplayScreen):
            self.monitor.set_position(step)

    # -- keys --------------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_explain_apply(self) -> None:
        self.monitor.explain_apply()

    def action_one_run(self) -> None:
        # A notification is markup: "[ and ]" would be read as a tag and dropped (rich's escape()
        # leaves it alone: it escapes only what looks like a tag to Rich). "\[" is a literal "["
        # to Rich's and Textual's markup alike.
        self.notify(ONE_RUN.replace("[", "\\["), timeout=6)


__all__ = ["LrtuiApp", "ONE_RUN"]
