"""The command-file protocol between a controlled training run and whoever steers it (``lrtui apply``, the app).

A run started with ``Probe(..., control=True)`` keeps ``RUN/control/`` (mode 0700). A command is a
small JSON file that a client writes into ``control/commands/`` (``<id>.json``, written to a hidden
temporary name and renamed, so the probe never sees half of it). Between two optimizer steps the
probe takes it: moves it to ``control/done/`` (the ledger that makes every id apply at most once,
also across a resume) or ``control/refused/``, applies it, and answers in ``events.jsonl``: an
``action`` event with the command's ``id`` when it was applied, a ``warning`` (``source``
``"control"``, the same ``id``) with the reason when it was refused. Nothing listens on a socket.

This module is both sides' one home for the format (schema, bounds, parsing) and the client's
half (writing a command, waiting for its answer). It never imports torch.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from lrtui.advisor import AdvisorState, Recommendation
from lrtui.advisor import recommend as _recommend
from lrtui.runlog.format import EVENTS_FILE, decode_line

CONTROL_DIR = "control"
#: ``control/commands/``: queued commands, ``<id>.json``.
COMMANDS_DIR = "commands"
#: ``control/done/``: commands the run has taken; their ids are never applied again.
DONE_DIR = "done"
#: ``control/refused/``: files the run refused (the ``warning`` event says why).
REFUSED_DIR = "refused"
COMMAND_SUFFIX = ".json"
#: Version of the command format (the ``schema`` field).
COMMAND_SCHEMA = 1
#: A command file larger than this is refused unread.
MAX_COMMAND_BYTES = 4096
#: The actions a command may ask for.
ACTIONS = ("set_lr", "drop_lr", "start_averaging")
#: Who may send a command file; ``autopilot`` acts inside the process and appears only in events.
FILE_SOURCES = ("command", "app")
SOURCES = FILE_SOURCES + ("autopilot",)
#: Factors an LR change may apply to any param group's LR (``--factor``, and what an absolute LR
#: implies against the LR in force): a typo of three orders of magnitude is refused, not applied.
FACTOR_MIN = 1e-4
FACTOR_MAX = 10.0
#: ``drop_lr`` without a recommendation in force: the classic step decay.
DROP_FACTOR = _recommend.DROP_FACTOR
#: Weight averaging the run may start (``Probe(..., averaging=...)``).
AVERAGING_MODES = ("swa", "ema")
#: ``source`` of the ``warning`` events of the control path.
WARNING_SOURCE = "control"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FIELDS = {"schema", "id", "run_id", "action", "source", "lr", "factor", "recommendation_step", "averaging",
           "created_at", "by"}
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class CommandError(ValueError):
    """A command that is malformed or out of bounds; the message is the one-line reason."""


@dataclass(frozen=True)
class Averaging:
    """How to average: an SWA checkpoint every ``checkpoint_every`` steps, or EMA with ``ema_decay``."""

    checkpoint_every: int
    ema_decay: float

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint_every": self.checkpoint_every, "ema_decay": self.ema_decay}


@dataclass(frozen=True)
class Command:
    """One command, as a client writes it and the probe reads it.

    Attributes:
        id: unique, also the file name (``<id>.json``).
        run_id: the ``meta.json`` run id it is meant for; another run refuses it.
        action: one of ``ACTIONS``.
        source: ``command`` (``lrtui apply``, a script) or ``app``.
        lr: ``set_lr``: the new LR of every param group (one number) or of each (a list);
            ``drop_lr``: the new LR of group 0 (the others move by the same factor).
        factor: instead of ``lr``: multiply every group's LR by it.
        recommendation_step: the step of the advisor's recommendation it follows, if any.
        averaging: ``start_averaging``: the advisor's sizing (None: the run sizes it).
        created_at: Unix time the client wrote it.
        by: who sent it, in words.
    """

    id: str
    run_id: str
    action: str
    source: str = "command"
    lr: float | tuple[float, ...] | None = None
    factor: float | None = None
    recommendation_step: int | None = None
    averaging: Averaging | None = None
    created_at: float | None = None
    by: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": COMMAND_SCHEMA, "id": self.id, "run_id": self.run_id,
                               "action": self.action, "source": self.source}
        if self.lr is not None:
            out["lr"] = list(self.lr) if isinstance(self.lr, tuple) else self.lr
        if self.factor is not None:
            out["factor"] = self.factor
        if self.recommendation_step is not None:
            out["recommendation_step"] = self.recommendation_step
        if self.averaging is not None:
            out["averaging"] = self.averaging.to_json()
        if self.created_at is not None:
            out["created_at"] = self.created_at
        if self.by is not None:
            out["by"] = self.by
        return out

    def encode(self) -> bytes:
        return _encoder.encode(self.to_json())


def new_command_id() -> str:
    """A fresh id that sorts by creation time (the run takes queued commands in name order)."""
    return f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"


def valid_id(text: str) -> bool:
    """True for an id the protocol allows (it is a file name: no separators, no leading dot)."""
    return _ID.fullmatch(text) is not None


def _number(value: Any, name: str) -> float:
    if value.__class__ is bool or not isinstance(value, (int, float)):
        raise CommandError(f"{name} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise CommandError(f"{name} is not finite")
    return value


def check_lr(value: float, name: str = "lr") -> float:
    """A learning rate: a positive finite number."""
    value = _number(value, name)
    if not value > 0:
        raise CommandError(f"{name} {value:g} is not positive")
    return value


def check_factor(value: float, name: str = "factor") -> float:
    """A factor within [``FACTOR_MIN``, ``FACTOR_MAX``]."""
    value = _number(value, name)
    if not FACTOR_MIN <= value <= FACTOR_MAX:
        raise CommandError(f"{name} {value:g} is outside [{FACTOR_MIN:g}, {FACTOR_MAX:g}]")
    return value


def parse_command(data: bytes, expected_id: str, run_id: str | None) -> Command:
    """Decode and check one command file's bytes. Raises CommandError with a one-line reason.

    ``expected_id`` is the file name's stem; ``run_id`` the run's own (None: not checked).
    """
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandError(f"larger than {MAX_COMMAND_BYTES} bytes")
    try:
        obj = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise CommandError("not valid JSON") from None
    if not isinstance(obj, dict):
        raise CommandError("not a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise CommandError(f"unknown field {unknown[0]!r}")
    if obj.get("schema") != COMMAND_SCHEMA:
        raise CommandError(f"schema is not {COMMAND_SCHEMA}")
    cid = obj.get("id")
    if not isinstance(cid, str) or not valid_id(cid):
        raise CommandError("no valid id")
    if cid != expected_id:
        raise CommandError(f"id {cid!r} differs from its file name {expected_id!r}")
    rid = obj.get("run_id")
    if not isinstance(rid, str):
        raise CommandError("no run_id")
    if run_id is not None and rid != run_id:
        raise CommandError(f"meant for another run (run_id {rid[:12]!r}, this run is {run_id[:12]!r})")
    action = obj.get("action")
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    source = obj.get("source", "command")
    if source not in FILE_SOURCES:
        raise CommandError(f"source {source!r} is not one of {', '.join(FILE_SOURCES)}")
    lr: float | tuple[float, ...] | None = None
    raw_lr = obj.get("lr")
    if raw_lr is not None:
        if isinstance(raw_lr, list):
            if action != "set_lr":
                raise CommandError(f"{action} takes one lr (group 0's), not a list")
            if not 1 <= len(raw_lr) <= 1024:
                raise CommandError("lr list must have 1 to 1024 entries")
            lr = tuple(check_lr(v, f"lr[{i}]") for i, v in enumerate(raw_lr))
        else:
            lr = check_lr(raw_lr)
    factor = None if obj.get("factor") is None else check_factor(obj["factor"])
    if action == "start_averaging" and (lr is not None or factor is not None):
        raise CommandError("start_averaging takes no lr or factor")
    if lr is not None and factor is not None:
        raise CommandError("give lr or factor, not both")
    if action == "set_lr" and lr is None and factor is None:
        raise CommandError("set_lr needs lr or factor")
    step = obj.get("recommendation_step")
    if step is not None and (step.__class__ is not int or step < 0):
        raise CommandError("recommendation_step is not a step")
    averaging = None
    raw_avg = obj.get("averaging")
    if raw_avg is not None:
        if action != "start_averaging":
            raise CommandError(f"{action} takes no averaging")
        averaging = _averaging(raw_avg)
    created = obj.get("created_at")
    if created is not None:
        created = _number(created, "created_at")
    by = obj.get("by")
    if by is not None and (not isinstance(by, str) or len(by) > 200):
        raise CommandError("by is not a short text")
    return Command(cid, rid, action, source, lr, factor, step, averaging, created, by)


def _averaging(raw: Any) -> Averaging:
    if not isinstance(raw, dict) or set(raw) - {"checkpoint_every", "ema_decay"}:
        raise CommandError("averaging must be {checkpoint_every, ema_decay}")
    every = raw.get("checkpoint_every")
    if every.__class__ is not int or not 1 <= every <= 10**9:
        raise CommandError("averaging.checkpoint_every is not a positive integer")
    decay = _number(raw.get("ema_decay"), "averaging.ema_decay")
    if not 0.0 < decay < 1.0:
        raise CommandError("averaging.ema_decay is not in (0, 1)")
    return Averaging(every, decay)


# -- what the advice says, for a command ----------------------------------------------------

def recommendation_in_force(state: AdvisorState, action: str) -> Recommendation | None:
    """The latest recommendation of ``action`` made at the LR in force (in the current segment).

    One made before the LR last changed is about another phase and is not in force.
    """
    start = state.segments[-1].start_step if state.segments else None
    for rec in reversed(state.recommendations):
        if rec.action == action and (start is None or rec.step is None or rec.step >= start):
            return rec
    return None


def size_averaging(step: int, since: int) -> Averaging:
    """The advisor's sizing (``lrtui.advisor.recommend.start_averaging``: over as long again as
    the LR has been constant since step ``since``), over at least as many steps as it has
    checkpoints, so a segment only a few steps old still gives a valid average (EMA decay > 0)."""
    since = min(since, step - _recommend.AVERAGING_CHECKPOINTS)
    numbers = _recommend.start_averaging(step, since, math.nan).numbers
    return Averaging(int(numbers["checkpoint_every"]), float(numbers["ema_decay"]))


def averaging_for(state: AdvisorState) -> tuple[Averaging, Recommendation | None]:
    """The averaging the advisor sized (its ``start_averaging`` in force), or, without one, the
    same sizing from the current segment so far (``size_averaging``)."""
    rec = recommendation_in_force(state, "start_averaging")
    if rec is not None:
        return Averaging(int(rec.numbers["checkpoint_every"]), float(rec.numbers["ema_decay"])), rec
    start = state.segments[-1].start_step if state.segments else 0
    return size_averaging(state.step or 0, start), None


# -- the client's half --------------------------------------------------------------------

def control_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CONTROL_DIR


def write_command(run_dir: str | os.PathLike[str], command: Command) -> Path:
    """Queue ``command`` for the run: written under a hidden name, then renamed (mode 0600).

    Raises CommandError when the run has no command directory or it is not a plain directory.
    """
    queue = control_dir(run_dir) / COMMANDS_DIR
    if queue.is_symlink() or control_dir(run_dir).is_symlink() or not queue.is_dir():
        raise CommandError(f"{queue}: no command directory (the run's probe did not create one)")
    final = queue / (command.id + COMMAND_SUFFIX)
    tmp = queue / f".{command.id}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, command.encode())
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return final


@dataclass
class Outcome:
    """What the run answered to one command.

    Attributes:
        status: ``applied``, ``refused``, ``ended`` (the run ended without answering) or
            ``waiting`` (no answer within the time given).
        event: the ``action`` or ``warning`` event that answered, when there is one.
    """

    status: str
    event: dict[str, Any] = field(default_factory=dict)


def events_size(run_dir: str | os.PathLike[str]) -> int:
    """The log's size now: where to start looking for the answer to a command written next."""
    try:
        return os.stat(Path(run_dir) / EVENTS_FILE).st_size
    except OSError:
        return 0


class AnswerWatcher:
    """Reads a run's log from ``offset`` on, for the answer to the command ``command_id``.

    The log only grows; its first line after ``offset`` may be the tail of a line being written
    then, which decodes as nothing (it cannot be the answer: the command came later).
    """

    def __init__(self, run_dir: str | os.PathLike[str], command_id: str, offset: int) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self.command_id = command_id
        self.offset = offset
        self._rest = b""

    def poll(self) -> Outcome | None:
        """The answer if it is in the log now (or the end record), else None."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                block = f.read(8 << 20)
        except OSError:
            return None
        self.offset += len(block)
        lines = (self._rest + block).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            if self.command_id.encode() not in line and b'"end"' not in line:
                continue  # cheap: most lines are steps
            event = decode_line(line)
            if event is None:
                continue
            kind = event.get("kind")
            if kind == "action" and event.get("id") == self.command_id:
                return Outcome("applied", event)
            if kind == "warning" and event.get("source") == WARNING_SOURCE and event.get("id") == self.command_id:
                return Outcome("refused", event)
            if kind == "end":
                return Outcome("ended", event)
        return None

    def wait(self, timeout: float, interval: float = 0.1) -> Outcome:
        """Poll until the answer comes or ``timeout`` seconds pass."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            found = self.poll()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("waiting")
            time.sleep(min(interval, left))


def describe_lrs(values: Any) -> str:
    """``0.01`` for one group, ``0.01, 0.001`` for several (3 significant digits)."""
    if not isinstance(values, list) or not values:
        return "?"
    return ", ".join(f"{v:.3g}" if isinstance(v, (int, float)) else str(v) for v in values)


def describe_outcome(outcome: Outcome) -> str:
    """One line for people: what the run did with the command."""
    e = outcome.event
    if outcome.status == "applied":
        text = f"{e.get('action')} applied at step {e.get('step')}"
        if e.get("action") == "start_averaging":
            avg = e.get("averaging") or {}
            mode = avg.get("mode", "?")
            how = (f"a checkpoint every {avg.get('checkpoint_every')} steps" if mode == "swa"
                   else f"decay {avg.get('ema_decay')}")
            return f"{text}: {mode.upper()} averaging, {how}"
        text += f": lr {describe_lrs(e.get('lr_before'))} -> {describe_lrs(e.get('lr_after'))}"
        if e.get("scheduler"):
            text += f" (scheduler {e['scheduler']} rescaled)"
        return text
    if outcome.status == "refused":
        return f"refused by the run: {e.get('message', '?')}"
    if outcome.status == "ended":
        return "the run ended before it took the command"
    return "not confirmed yet"


__all__ = [
    "ACTIONS",
    "AVERAGING_MODES",
    "COMMANDS_DIR",
    "COMMAND_SCHEMA",
    "CONTROL_DIR",
    "DONE_DIR",
    "DROP_FACTOR",
    "FACTOR_MAX",
    "FACTOR_MIN",
    "MAX_COMMAND_BYTES",
    "REFUSED_DIR",
    "SOURCES",
    "WARNING_SOURCE",
    "AnswerWatcher",
    "Averaging",
    "Command",
    "CommandError",
    "Outcome",
    "averaging_for",
    "check_factor",
    "check_lr",
    "control_dir",
    "describe_outcome",
    "events_size",
    "new_command_id",
    "parse_command",
    "recommendation_in_force",
    "size_averaging",
    "valid_id",
    "write_command",
]
