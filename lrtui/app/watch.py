"""``lrtui watch``: the main screen following live runs, and the runs that appear later."""

from __future__ import annotations

from pathlib import Path

from lrtui.app.live import DirectoryScanner, LiveSource
from lrtui.app.messages import RunChanged, RunsFound
from lrtui.app.monitor import MonitorOptions, MonitorScreen
from lrtui.app.runs import LIVE_STATUSES, live_run
from lrtui.app.runview import RunView


class WatchScreen(MonitorScreen):
    """Follows a run, or every run in a directory (new ones too), as the jobs write them.

    It opens on the run being written (the one that wrote last) and follows the live run until
    the user picks one; after that, the run shown is the user's, whatever appears.
    """

    def __init__(self, path: Path, options: MonitorOptions, *, poll: bool = False) -> None:
        super().__init__(path, options)
        self.poll = poll
        self.user_chose = False

    def start_reading(self) -> None:
        if not self.views and not self.path.is_dir():
            self.views = [RunView(self.path)]  # a run that is about to start: wait for it
            self.is_sweep = False
        for view in self.views:
            self._follow(view)
        if self.is_sweep:
            scanner = DirectoryScanner(self.path, self.post_message)
            scanner.start([v.path for v in self.views])
            self._sources.append(scanner)

    def _follow(self, view: RunView) -> None:
        source = LiveSource(view, self.post_message, use_inotify=not self.poll)
        source.start()
        self._sources.append(source)

    def choose(self, key: str) -> None:
        self.user_chose = True
        super().choose(key)

    def on_run_changed(self, message: RunChanged) -> None:
        self._follow_the_live_run()
        super().on_run_changed(message)

    def on_runs_found(self, message: RunsFound) -> None:
        known = {v.path for v in self.views}
        for path in message.paths:
            if path not in known:
                view = RunView(path)
                self.views.append(view)
                self._follow(view)
        self.sort_views()
        self.refresh_bindings()  # a second run: r, o, [ and ] now work and show in the footer
        self._dirty = True

    def _follow_the_live_run(self) -> None:
        """Until the user picks a run: when the run shown is not live and another one is, show that."""
        if self.user_chose or len(self.views) < 2:
            return
        shown = self.view
        now = self.options.clock()
        if shown is not None:
            with shown.lock:
                if shown.status(now) in LIVE_STATUSES:
                    return
        live = live_run(self.views, now)
        if live is not None and live is not shown:
            self.selected = live.key
            self._dirty = True


__all__ = ["WatchScreen"]
