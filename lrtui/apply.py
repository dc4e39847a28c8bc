"""The ``lrtui apply`` command: ask a running job to set or drop its LR or start weight averaging.

Exit status: 0 once the run confirmed that it applied the action, 4 when it did not confirm in
time (the command stays queued), 2 for bad input (no such run, an ended run, a run that does not
accept commands, a bad LR or factor, or the run refused the command).
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from lrtui.advisor import STEP_FIELDS_READ, Advisor
from lrtui.control import (
    FACTOR_MAX,
    FACTOR_MIN,
    NO_CONTROL,
    AnswerWatcher,
    Command,
    CommandError,
    accepts_commands,
    averaging_for,
    check_factor,
    check_lr,
    describe_lrs,
    describe_outcome,
    events_size,
    new_command_id,
    recommendation_in_force,
    write_command,
)
from lrtui.errors import EXIT_NOT_CONFIRMED, EXIT_OK, UserError
from lrtui.runlog import EVENTS_FILE, load_run, read_meta, run_status
from lrtui.runlog.run import ENDED
from lrtui.runlog.format import decode_lines

#: ``--wait`` by default: seconds to wait for the run to confirm.
DEFAULT_WAIT = 30.0
#: Bytes at the end of the log read to tell whether the run has ended.
TAIL_BYTES = 64 << 10


def parse_args(args: argparse.Namespace) -> None:
    """Check ``--lr``, ``--factor`` and ``--wait`` (given as text by ``lrtui.cli``) in place."""
    try:
        if args.lr is not None:
            args.lr = tuple(check_lr(_float(part), "lr") for part in str(args.lr).split(","))
        if args.factor is not None:
            args.factor = check_factor(_float(args.factor))
    except CommandError as exc:
        raise UserError(f"{exc} (--lr takes positive finite numbers, --factor one in "
                        f"[{FACTOR_MIN:g}, {FACTOR_MAX:g}])") from None
    wait = _float(args.wait) if args.wait is not None else DEFAULT_WAIT
    if not (math.isfinite(wait) and wait >= 0):
        raise UserError(f"--wait must be a number of seconds >= 0, not {args.wait!r}")
    args.wait = wait


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise UserError(f"not a number: {text!r}") from None


def run_ended(run_dir: Path, meta: dict[str, Any]) -> str | None:
    """``finished``, ``failed``, ``terminated`` or ``crashed`` when the run has ended, else None (read from the
    log's last ``TAIL_BYTES``: an end record is the last thing a run writes)."""
    path = run_dir / EVENTS_FILE
    end, last_time = None, None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            events, _ = decode_lines(f.read().split(b"\n"))
        for e in events:
            if e.get("kind") == "end":
                end = e
            elif e.get("kind") == "resume":  # an end record before a resume does not end the run
                end = None
            if isinstance(e.get("time"), (int, float)):
                last_time = e["time"]
    except OSError:
        pass
    status = run_status(meta, end, last_time, run_dir=run_dir)
    return status if status in ENDED else None


def build_command(args: argparse.Namespace, run_dir: Path, meta: dict[str, Any]) -> tuple[Command, str]:
    """The command to send, and a line saying what it asks for."""
    base = {"id": new_command_id(), "run_id": str(meta.get("run_id", "")), "action": args.action,
            "source": "command", "created_at": time.time(), "by": _who()}
    if args.action == "set_lr":
        if args.lr is None and args.factor is None:
            raise UserError("set_lr needs --lr LR or --factor F")
        if args.factor is not None:
            return Command(**base, factor=args.factor), f"set_lr x{args.factor:g}"
        lr = args.lr[0] if len(args.lr) == 1 else tuple(args.lr)
        return Command(**base, lr=lr), f"set_lr to {describe_lrs(list(args.lr))}"
    if args.lr is not None or args.factor is not None:
        raise UserError(f"{args.action} takes no --lr or --factor (set_lr does)")
    try:
        state = Advisor.from_run(load_run(run_dir, step_fields=STEP_FIELDS_READ)).state()
    except (OSError, ValueError) as exc:
        raise UserError(f"{run_dir}: cannot read the run for the advice: {exc}") from None
    if args.action == "drop_lr":
        rec = recommendation_in_force(state, "drop_lr")
        new_lr = rec.numbers.get("new_lr") if rec is not None else None
        if rec is not None and isinstance(new_lr, float) and new_lr > 0 and math.isfinite(new_lr):
            now = describe_lrs(state.lrs[:1]) if state.lrs else "?"
            return (Command(**base, lr=new_lr, recommendation_step=rec.step),
                    f"drop_lr to {new_lr:.3g} from {now} (group 0; the advisor's recommendation of step {rec.step})")
        return Command(**base), "drop_lr x0.1 (no drop_lr recommendation in force)"
    averaging, rec = averaging_for(state)
    where = f"the advisor's recommendation of step {rec.step}" if rec is not None else "sized from the run so far"
    return (Command(**base, averaging=averaging, recommendation_step=rec.step if rec is not None else None),
            f"start_averaging ({where})")


def _who() -> str:
    try:
        return f"lrtui apply ({getpass.getuser()}@{socket.gethostname()})"[:200]
    except Exception:
        return "lrtui apply"


def apply_main(args: argparse.Namespace) -> int:
    parse_args(args)
    run_dir = Path(args.path)
    meta = read_meta(run_dir)
    if not accepts_commands(meta):
        raise UserError(f"{run_dir}: {NO_CONTROL}")
    ended = run_ended(run_dir, meta)
    if ended is not None:
        raise UserError(f"{run_dir}: the run has ended ({ended}); commands go to a running run")
    command, what = build_command(args, run_dir, meta)
    offset = events_size(run_dir)
    try:
        path = write_command(run_dir, command)
    except CommandError as exc:
        raise UserError(str(exc)) from None
    watcher = AnswerWatcher(run_dir, command.id, offset)
    outcome = watcher.wait(args.wait)
    if outcome.status == "applied":
        print(f"{run_dir}: {describe_outcome(outcome)}")
        return EXIT_OK
    if outcome.status == "refused":
        raise UserError(f"{run_dir}: {what}: {describe_outcome(outcome)}")
    if outcome.status == "ended":
        _withdraw(path)
        print(f"lrtui: {run_dir}: {what}: {describe_outcome(outcome)}; the command was withdrawn",
              file=sys.stderr)
        return EXIT_NOT_CONFIRMED
    print(f"lrtui: {run_dir}: {what}: not confirmed within {args.wait:g} s; it stays queued and the run "
          f"applies it when it next looks (remove {path} to cancel)", file=sys.stderr)
    return EXIT_NOT_CONFIRMED


def _withdraw(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


__all__ = ["apply_main", "build_command", "parse_args", "run_ended"]
