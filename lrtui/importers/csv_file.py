"""Scalars from a CSV log: a header row, one row per logged step (Lightning's ``CSVLogger``
``metrics.csv``, a W&B or TensorBoard CSV export, a hand-written log)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lrtui.errors import UserError
from lrtui.importers.run import Series

#: Columns that say the step, in order of preference (the first present is used); without one,
#: the row number is the step.
STEP_COLUMNS = ("step", "global_step", "_step", "iteration", "iter", "trainer/global_step", "train/global_step", "Step")
#: Columns that say when (Unix seconds): W&B's ``_timestamp``, TensorBoard exports' ``Wall time``.
TIME_COLUMNS = ("time", "timestamp", "_timestamp", "wall_time", "Wall time", "walltime")
#: Columns that are neither a step field nor a metric.
IGNORED_COLUMNS = ("epoch", "_runtime", "Unnamed: 0", "")
#: Most bytes read (a CSV log is a few MB; this is a guard against pointing at the wrong file).
MAX_BYTES = 2 << 30


def read_scalars(path: Path, step_column: str | None = None) -> tuple[Series, list[str]]:
    """(every numeric column as a series, the columns left out because they hold text).

    Empty cells are "not logged at this step" (Lightning writes sparse rows); ``nan``, ``inf``
    and ``-inf`` are those floats. A step that is not a whole number >= 0 is a one-line error.
    """
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES >> 30} GiB; not a CSV log")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(1 << 16)
            f.seek(0)
            try:
                dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            rows = csv.reader(f, dialect)
            header = next(rows, None)
            if not header or all(not h.strip() for h in header):
                raise UserError(f"{path}: empty, or no header row")
            header = [h.strip() for h in header]
            step_at = _column_index(header, (step_column,) if step_column else STEP_COLUMNS)
            if step_column and step_at is None:
                raise UserError(f"{path}: no column {step_column!r} (columns: {', '.join(header)})")
            time_at = _column_index(header, TIME_COLUMNS)
            skip = {i for i in (step_at, time_at) if i is not None}
            skip |= {i for i, h in enumerate(header) if h in IGNORED_COLUMNS}
            series: Series = {header[i]: [] for i in range(len(header)) if i not in skip}
            text: list[str] = []
            for number, row in enumerate(rows):
                line = number + 2
                if not row or all(not c.strip() for c in row):
                    continue
                step = number if step_at is None else _step(row, step_at, path, line, header)
                if step is None:
                    continue
                wall = _number(row[time_at], path, line, header[time_at]) if time_at is not None and time_at < len(row) and row[time_at].strip() else None
                for i, cell in enumerate(row):
                    if i in skip or i >= len(header) or not cell.strip():
                        continue
                    try:
                        series[header[i]].append((step, wall, float(cell)))
                    except ValueError:  # a text column (a phase name, a W&B run name): left out
                        skip.add(i)
                        text.append(header[i])
                        series.pop(header[i], None)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); not a CSV log") from None
    except csv.Error as exc:
        raise UserError(f"{path}: not a CSV log ({exc})") from None
    series = {name: points for name, points in series.items() if points}
    if not series:
        raise UserError(f"{path}: no numeric column with values")
    return series, text


def _column_index(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.lower() for h in header]
    for name in names:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    return None


def _step(row: list[str], at: int, path: Path, line: int, header: list[str]) -> int | None:
    cell = row[at].strip() if at < len(row) else ""
    if not cell:
        return None  # a row without a step (Lightning's epoch-end rows have one; others may not)
    value = _number(cell, path, line, header[at])
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise UserError(f"{path}:{line}: step {cell!r} is not a whole number >= 0")
    return int(value)


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell.strip())
    except ValueError:
        raise UserError(f"{path}:{line}: column {column!r} holds {cell.strip()[:40]!r}, not a number") from None
