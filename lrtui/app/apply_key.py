"""The apply key of the main screen: follow the advisor's recommendation in force on a live run.

Shown in the footer only when it can act: watching a running run started with
``Probe(..., control=True)`` whose advisor has a recommendation in force that a command can
follow (``lrtui.advice_action``). Pressed, it asks for a confirmation that states the action
and every group's old and new LR, then a CommandSender thread sends the command (``source``
``app``) and the run's answer is shown on the advisor panel. Anywhere else the app's fallback
for the key says in one line why it does nothing.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass

from rich.markup import escape
from textual.binding import Binding
from textual.screen import Screen

from lrtui.advice_action import Proposal, propose
from lrtui.app.command_sender import CommandSender
from lrtui.app.messages import CommandAnswered
from lrtui.app.runview import RunView
from lrtui.app.widgets import ConfirmActionScreen
from lrtui.apply import DEFAULT_WAIT
from lrtui.control import NO_CONTROL, accepts_commands, describe_outcome

#: The key (also the app's fallback binding that explains why it does nothing).
APPLY_KEY = "x"
#: What the key says in a replay.
IN_REPLAY = ("a replay applies nothing: the apply key acts on a live run started with Probe(..., control=True), "
             "watched with lrtui watch")


@dataclass(frozen=True)
class CommandNote:
    """The advisor panel's line about the app's last command to a run."""

    text: str
    style: str


def why_not(view: RunView | None, *, replay: bool, now: float) -> str | None:
    """Why the apply key does nothing for the run shown, in one line; None when it can act."""
    if replay:
        return IN_REPLAY
    if view is None or view.meta is None:
        return "no run yet"
    if not accepts_commands(view.meta):
        return NO_CONTROL
    with view.lock:
        status, state = view.status(now), view.state
    if status != "running":
        return f"the run is {status}: commands go to a running run"
    if state is None:
        return "the advisor has no state yet"
    proposals, why = propose(state)
    return None if proposals else why


def _who() -> str:
    try:
        return f"lrtui app ({getpass.getuser()}@{socket.gethostname()})"[:200]
    except Exception:
        return "lrtui app"


class ApplyKeyScreen(Screen[None]):
    """The apply key's part of the main screen (MonitorScreen says which run is shown)."""

    BINDINGS = [Binding(APPLY_KEY, "apply_advice", "apply advice")]
    replay = False
    #: Seconds the app waits for the run to confirm a command.
    command_wait = DEFAULT_WAIT

    def __init__(self) -> None:
        super().__init__()
        self.command_notes: dict[str, CommandNote] = {}
        self._can_apply = False
        self._senders: list[CommandSender] = []

    @property
    def view(self) -> RunView | None:
        """The run shown (MonitorScreen's)."""
        return None

    def now(self) -> float:
        """The clock the run's status is judged by."""
        raise NotImplementedError

    def mark_dirty(self) -> None:
        """Ask for a redraw at the next refresh."""

    def why_not_apply(self) -> str | None:
        return why_not(self.view, replay=self.replay, now=self.now())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply_advice":
            return self.why_not_apply() is None  # else the app's fallback says why
        return True

    def update_apply_binding(self) -> None:
        """Show or hide the key in the footer as the run and its advice change."""
        can = self.why_not_apply() is None
        if can != self._can_apply:
            self._can_apply = can
            self.refresh_bindings()

    def explain_apply(self) -> None:
        """The key pressed where it cannot act: say why in one line (panel and notification)."""
        why = self.why_not_apply() or "nothing to apply now"
        view = self.view
        if view is not None:
            self.command_notes[view.key] = CommandNote(f"{APPLY_KEY}: {why}", "yellow")
            self.mark_dirty()
        self.notify(escape(why), timeout=8)

    def action_apply_advice(self) -> None:
        view = self.view
        if view is None or self.why_not_apply() is not None:
            self.explain_apply()
            return
        with view.lock:
            state, meta = view.state, view.meta or {}
        if state is None:
            return
        proposals, _ = propose(state)

        def chosen(index: int | None) -> None:
            if index is not None and 0 <= index < len(proposals):
                self._send(view, proposals[index], str(meta.get("run_id", "")))

        self.app.push_screen(ConfirmActionScreen(view.name, [p.what() for p in proposals]), chosen)

    def _send(self, view: RunView, proposal: Proposal, run_id: str) -> None:
        command = proposal.command(run_id, "app", _who())
        what = proposal.what()
        self.command_notes[view.key] = CommandNote(f"sent {what}; waiting for the run…", "cyan")
        sender = CommandSender(view.key, view.path, command, what, self.post_message, self.command_wait)
        self._senders.append(sender)
        sender.start()
        self.mark_dirty()

    def on_command_answered(self, message: CommandAnswered) -> None:
        note = command_note(message, self.command_wait)
        self.command_notes[message.key] = note
        self.notify(escape(note.text), severity="information" if note.style == "green" else "warning", timeout=10)
        self.mark_dirty()

    def on_unmount(self) -> None:
        for sender in self._senders:
            sender.close()


def command_note(message: CommandAnswered, wait: float) -> CommandNote:
    """The panel's line for the run's answer."""
    if message.error is not None or message.outcome is None:
        return CommandNote(f"not sent: {message.error}", "bold red")
    outcome = message.outcome
    if outcome.status == "applied":
        return CommandNote(f"✓ {describe_outcome(outcome)}", "green")
    if outcome.status == "refused":
        return CommandNote(f"✗ {message.what.split(':')[0]} {describe_outcome(outcome)}", "bold red")
    if outcome.status == "ended":
        return CommandNote(f"✗ {describe_outcome(outcome)}; the command was withdrawn", "yellow")
    return CommandNote(f"… {message.what.split(':')[0]} not confirmed in {wait:g} s: still queued "
                       f"(remove {message.path} to cancel)", "yellow")


__all__ = ["APPLY_KEY", "IN_REPLAY", "ApplyKeyScreen", "CommandNote", "command_note", "why_not"]
