"""The ``lrtui import`` command: ``import tensorboard LOGDIR RUN_DIR`` and ``import csv FILE RUN_DIR``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from lrtui.errors import EXIT_OK, UserError
from lrtui.importers import csv_file, tensorboard
from lrtui.importers.names import STEP_TARGETS, parse_map
from lrtui.importers.run import Series, build_events, check_new_run_dir, write_run

MAP_HELP = ("NAME=FIELD: the scalar NAME is FIELD, a step field (loss, grad_norm, update_norm, "
            "weight_norm, lr), 'skip', or a metric name; repeat for more (wins over the common names)")


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``import`` subcommand and its two sources, on the ``lrtui`` parser's subparsers."""
    command = sub.add_parser(
        "import",
        help="convert TensorBoard or CSV logs into a run directory (then advise, replay, watch it)",
        description="Convert the logs of a run that had no probe into a run directory. Scalars are "
        "mapped to loss, grad_norm and lr by their common names (train/loss, train_loss, lr, "
        "learning_rate, lr-AdamW, grad_norm, ...); every other scalar, e.g. val_acc, becomes a "
        "user metric. --map overrides. Never writes into an existing, non-empty directory.",
    )
    sources = command.add_subparsers(dest="source", metavar="SOURCE", parser_class=parser_class, required=True)
    _source(sources, "tensorboard", ("logdir", "LOGDIR", "a TensorBoard log directory, or one event file"),
            help="TensorBoard event files (needs lrtui[tensorboard])",
            description="Read a TensorBoard log directory (or one event file) with TensorBoard's own "
            "reader. A directory with several runs (subdirectories with event files) becomes a "
            "directory of runs, one per subdirectory.")
    table = _source(sources, "csv", ("file", "FILE", "the CSV file"),
                    help="a CSV log with a header row (Lightning's metrics.csv, a W&B export, ...)",
                    description="Read a CSV log: a header row, then one row per logged step. The step is the "
                    "step/global_step/_step column (or --step-column), else the row number; empty cells are "
                    "steps where that column was not logged.")
    table.add_argument("--step-column", metavar="NAME", help="the column that holds the step")


def _source(sources: Any, name: str, where: tuple[str, str, str], **texts: str) -> argparse.ArgumentParser:
    """One source's parser: where the log is, the run directory to create, ``--map``."""
    parser: argparse.ArgumentParser = sources.add_parser(name, **texts)
    dest, metavar, help_text = where
    parser.add_argument(dest, metavar=metavar, help=help_text)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to create")
    parser.add_argument("--map", action="append", default=[], metavar="NAME=FIELD", help=MAP_HELP)
    return parser


def import_main(args: argparse.Namespace) -> int:
    """Run ``lrtui import``; returns the exit status (bad input raises UserError: one line, 2)."""
    overrides = parse_map(args.map)
    run_dir = Path(args.run_dir)
    check_new_run_dir(run_dir)  # before reading anything: say it at once
    if args.source == "csv":
        path = Path(args.file)
        series, text = csv_file.read_scalars(path, args.step_column)
        if text:
            print(f"left out columns that hold text: {', '.join(text)}")
        _import_one(series, overrides, run_dir, path, "csv", default_time=path.stat().st_mtime)
        return EXIT_OK
    logdir = Path(args.logdir)
    if not logdir.exists():
        raise UserError(f"{logdir}: no such directory")
    dirs = tensorboard.event_dirs(logdir)
    if not dirs:
        raise UserError(f"{logdir}: no TensorBoard event files (files named *tfevents*) in it or below it")
    if len(dirs) == 1:
        series = tensorboard.read_scalars(dirs[0])
        _import_one(series, overrides, run_dir, dirs[0], "tensorboard", default_time=_mtime(dirs[0]))
        return EXIT_OK
    # Several runs: one run directory each, side by side in RUN_DIR (a sweep for advise/watch).
    plans = []
    names: set[str] = set()
    for d in dirs:
        series = tensorboard.read_scalars(d)
        base = str(d.relative_to(logdir)).replace(os.sep, "-") if d != logdir else logdir.name
        name, n = base, 1
        while name in names:  # "a/b" and "a-b" would share a name
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        try:
            events, mapping = build_events(series, overrides, default_time=_mtime(d))
        except UserError as exc:
            print(f"{d}: left out: {exc}")
            continue
        plans.append((run_dir / name, d, events, mapping))
    if not plans:
        raise UserError(f"{logdir}: none of its {len(dirs)} runs has a loss, gradient norm or LR; say which scalar with --map NAME=loss")
    for target, d, events, mapping in plans:
        write_run(target, events, source=str(d.resolve()), imported_from="tensorboard", mapping=mapping)
        _report(target, events, mapping)
    return EXIT_OK


def _import_one(series: Series, overrides: dict[str, str], run_dir: Path, source: Path, kind: str, *, default_time: float) -> None:
    events, mapping = build_events(series, overrides, default_time=default_time)
    write_run(run_dir, events, source=str(source.resolve()), imported_from=kind, mapping=mapping)
    _report(run_dir, events, mapping)


def _report(run_dir: Path, events: list[dict[str, Any]], mapping: dict[str, Any]) -> None:
    steps = [e["step"] for e in events if e["kind"] == "step"]
    metrics = sum(1 for e in events if e["kind"] == "metric")
    fields = [f"{target} <- {name!r}" for name, target in mapping["scalars"].items() if target in STEP_TARGETS]
    others = [name for name, target in mapping["scalars"].items() if target not in STEP_TARGETS and target != "skip"]
    span = f" (steps {steps[0]}..{steps[-1]})" if steps else ""
    line = f"wrote {run_dir}: {len(steps)} step events{span}, {metrics} metric events; {', '.join(fields)}"
    if others:
        line += f"; metrics: {', '.join(others[:8])}" + (" ..." if len(others) > 8 else "")
    print(line)
    sys.stdout.flush()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
