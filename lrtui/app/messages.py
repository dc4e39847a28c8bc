"""Messages the reading threads post to the screen; high-rate ones replace their pending copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from textual.message import Message

from lrtui.control import Outcome
from lrtui.system import GpuReading

#: How a reading thread tells the screen: ``Screen.post_message`` (safe from any thread).
Post = Callable[[Message], Any]


class RunChanged(Message):
    """New events, a reset or an advisor update for one run (a burst collapses into one)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunChanged) and message.key == self.key


class RunsFound(Message):
    """Run directories that appeared under the watched directory."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths


class SystemSampled(Message):
    """One reading of the local machine (newest wins)."""

    def __init__(self, gpus: list[GpuReading], host: dict[str, Any], nvml_error: str | None) -> None:
        super().__init__()
        self.gpus = gpus
        self.host = host
        self.nvml_error = nvml_error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SystemSampled)


class CommandAnswered(Message):
    """What a run did with a command the app sent it (``outcome.status``: applied, refused,
    ended, waiting), or ``error``: why the command could not be written."""

    def __init__(self, key: str, command_id: str, what: str, outcome: Outcome | None, path: Path | None,
                 error: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.command_id = command_id
        self.what = what
        self.outcome = outcome
        self.path = path
        self.error = error


__all__ = ["CommandAnswered", "Post", "RunChanged", "RunsFound", "SystemSampled"]
