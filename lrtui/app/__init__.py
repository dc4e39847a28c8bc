"""The terminal app: ``lrtui watch`` follows live runs, ``lrtui replay`` plays recorded ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from lrtui.app.app import LrtuiApp
from lrtui.errors import UserError
from lrtui.runlog import find_runs


def watch_main(args: argparse.Namespace) -> int:
    """``lrtui watch RUN_OR_DIR``: follow a run (or every run in a directory) as it is written."""
    path = Path(args.path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: not a run directory or a directory of runs")
    app = LrtuiApp(path, "watch", refresh=args.refresh, poll=args.poll)
    app.run()
    return app.return_code or 0  # non-zero when the app stopped on an error


def replay_main(args: argparse.Namespace) -> int:
    """``lrtui replay RUN_OR_DIR``: play recorded runs with play/pause, speed and seek."""
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such directory")
    if not find_runs(path):
        raise UserError(f"{path}: no run here (a run directory holds meta.json)")
    app = LrtuiApp(path, "replay", refresh=args.refresh, speed=args.speed)
    app.run()
    return app.return_code or 0  # non-zero when the app stopped on an error


__all__ = ["LrtuiApp", "replay_main", "watch_main"]
