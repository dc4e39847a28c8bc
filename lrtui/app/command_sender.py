"""The thread that sends the app's command to a run and waits for its answer (it only posts a message)."""

from __future__ import annotations

import threading
from pathlib import Path

from lrtui.app.messages import CommandAnswered, Post
from lrtui.control import AnswerWatcher, Command, CommandError, Outcome, events_size, write_command

#: Seconds between two looks at the log for the answer.
POLL_INTERVAL = 0.1


class CommandSender:
    """Writes ``command`` into the run's queue, reads the log until the run answers (at most
    ``wait`` seconds), then posts CommandAnswered. A run that ended without taking the command
    gets it withdrawn (as ``lrtui apply`` does); one not confirmed in time keeps it queued."""

    def __init__(self, key: str, run_dir: Path, command: Command, what: str, post: Post, wait: float) -> None:
        self.key, self.run_dir, self.command, self.what = key, run_dir, command, what
        self.post = post
        self.wait = wait
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"command {command.id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        offset = events_size(self.run_dir)
        try:
            path = write_command(self.run_dir, self.command)
        except (CommandError, OSError) as exc:
            self.post(CommandAnswered(self.key, self.command.id, self.what, None, None, error=str(exc)))
            return
        watcher = AnswerWatcher(self.run_dir, self.command.id, offset)
        outcome = watcher.poll()
        waited = 0.0
        while outcome is None and waited < self.wait and not self.stop.wait(POLL_INTERVAL):
            waited += POLL_INTERVAL
            outcome = watcher.poll()
        if outcome is None:
            outcome = Outcome("waiting")
        if outcome.status == "ended":
            try:
                path.unlink()
            except OSError:
                pass
        self.post(CommandAnswered(self.key, self.command.id, self.what, outcome, path))

    def close(self) -> None:
        self.stop.set()


__all__ = ["CommandSender", "POLL_INTERVAL"]
