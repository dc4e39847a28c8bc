"""The ``lrtui`` command: watch, replay, advise, apply, demo, import."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, NoReturn, Sequence

from lrtui import __version__
from lrtui.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, UserError
from lrtui.importers import command as import_command
from lrtui.runlog.format import RunFormatError

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_OK", "UserError",
           "build_parser", "main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 2, instead of usage + message
        self.exit(EXIT_BAD_INPUT, f"lrtui: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lrtui",
        description="Terminal monitor and learning-rate advisor for live PyTorch training.",
    )
    parser.add_argument("--version", action="version", version=f"lrtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    watch = sub.add_parser(
        "watch",
        help="follow a live run (or every run in a directory) in the terminal",
        description="Follow a run directory, or a directory of runs, while the job writes it. "
        "Charts, the advisor's state and recommendations, and GPU/CPU use.",
    )
    watch.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    watch.add_argument("--poll", action="store_true",
                       help="poll the files instead of using inotify (network filesystems)")
    watch.add_argument("--refresh", type=_positive_float, default=0.5, metavar="SECONDS",
                       help="seconds between screen refreshes (default 0.5)")

    replay = sub.add_parser(
        "replay",
        help="play a recorded run (or a directory of runs) offline",
        description="Replay recorded runs with play/pause, speed and seek; the advisor's state is "
        "the state at the replay position. Needs no torch.",
    )
    replay.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    replay.add_argument("--speed", type=_positive_float, default=1.0,
                        help="logged steps per refresh multiplier (default 1)")
    replay.add_argument("--refresh", type=_positive_float, default=0.5, metavar="SECONDS",
                        help="seconds between screen refreshes (default 0.5)")

    advise = sub.add_parser(
        "advise",
        help="print the advisor's verdict and recommendations for a run or a sweep",
        description="Print regime, learning rate, sharpness against its stability threshold, "
        "alerts and recommendations. Exit status: 0 normally, 3 when the run has diverged, "
        "2 for bad input.",
    )
    advise.add_argument("path", metavar="RUN_OR_SWEEP", help="a run directory, or a directory of runs")
    advise.add_argument("--json", action="store_true", help="print JSON (every key in docs/advisor.md)")
    advise.add_argument("--follow", action="store_true",
                        help="print each new recommendation as it arises, until the run ends; on a sweep "
                        "directory, those of every run (runs that start later too) and the sweep's "
                        "threshold and band whenever they change, until every run has ended")
    advise.add_argument("--poll", action="store_true",
                        help="with --follow: poll instead of using inotify")
    advise.add_argument("--threshold-lr", type=_positive_float, metavar="LR",
                        help="the convergence threshold measured by an earlier sweep: the run's "
                        "drop_lr, raise_lr and lower_lr aim by it (one run; a sweep measures its own)")

    apply = sub.add_parser(
        "apply",
        help="ask a running job to set or drop its LR, or start weight averaging",
        description="Queue an action for a run started with Probe(..., control=True) and wait until it "
        "confirms. set_lr needs --lr (one LR for every param group, or one per group: 0.01,0.001) or "
        "--factor; drop_lr goes to the advisor's recommended LR (x0.1 without one); start_averaging "
        "averages as the advisor sized it. Exit status: 0 applied, 4 not confirmed in time (it stays "
        "queued), 2 bad input or refused by the run.",
    )
    apply.add_argument("path", metavar="RUN", help="the run directory")
    apply.add_argument("action", metavar="ACTION", choices=["set_lr", "drop_lr", "start_averaging"],
                       help="set_lr, drop_lr or start_averaging")
    how = apply.add_mutually_exclusive_group()
    how.add_argument("--lr", metavar="LR", help="set_lr: the new LR, or one per param group (comma-separated)")
    how.add_argument("--factor", metavar="F", help="set_lr: multiply every group's LR by F, in [1e-4, 10]")
    apply.add_argument("--wait", metavar="SECONDS", default="30",
                       help="seconds to wait for the run to confirm (default 30; 0: do not wait)")

    demo = sub.add_parser(
        "demo",
        help="train a small model live with the probe attached and watch it",
        description="Start a short CPU training in a child process with the probe attached and "
        "open the watch app on it. With --replay, open the recorded sample sweep instead.",
    )
    demo.add_argument("--replay", action="store_true", help="replay the recorded sample runs instead")
    demo.add_argument("--dir", default=None, metavar="DIR",
                      help="where the demo run is written (default: a new temporary directory)")
    demo.add_argument("--steps", type=_positive_int, default=40_000,
                      help="training steps of the live demo (default 40000: about a minute)")
    demo.add_argument("--no-app", action="store_true",
                      help="only run the training and print where the run is (no screen)")

    import_command.add_parser(sub, _Parser)
    return parser


#: Subcommand -> "module:function" taking the parsed arguments and returning an exit status.
COMMANDS: dict[str, str] = {
    "watch": "lrtui.app:watch_main",
    "replay": "lrtui.app:replay_main",
    "advise": "lrtui.advise:advise_main",
    "apply": "lrtui.apply:apply_main",
    "demo": "lrtui.demo:demo_main",
    "import": "lrtui.importers.command:import_main",
}


def _load(command: str) -> Callable[[argparse.Namespace], int]:
    module_name, func = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module_name), func)


def _stdout_gone() -> int:
    # The reader of our output went away (`lrtui advise RUN | head -1`): not an error. Point
    # stdout at /dev/null so the flush at interpreter exit does not complain on stderr.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lrtui`` command; returns its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_OK
    except BrokenPipeError:
        return _stdout_gone()
    try:
        return int(_load(args.command)(args) or 0)
    except (UserError, RunFormatError) as exc:
        print(f"lrtui: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_gone()
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"lrtui: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug of ours: still one line, with a way to see more
        if os.environ.get("LRTUI_DEBUG"):
            raise
        print(f"lrtui: internal error: {type(exc).__name__}: {exc} (LRTUI_DEBUG=1 shows more)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m lrtui.cli
    sys.exit(main())
