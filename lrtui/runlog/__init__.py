"""The run directory: its format, a writer for the training process, and readers for everyone else.

``format`` is the contract (docs/run-format.md in code), ``writer`` the training side
(``RunWriter``), ``reader`` whole runs as numpy columns (``load_run``, ``Run``, ``RunData``,
``run_status``, ``find_runs``), ``follower`` live runs (``RunFollower``, ``Batch``).
"""

from __future__ import annotations

from lrtui.runlog.follower import Batch, RunFollower
from lrtui.runlog.format import (
    EVENTS_FILE,
    KINDS,
    META_FILE,
    SCHEMA_VERSION,
    RunFormatError,
    is_run_dir,
    read_meta,
)
from lrtui.runlog.reader import Run, RunData, find_runs, finite_float, float_column, load_run, run_status
from lrtui.runlog.writer import RunWriter

__all__ = [
    "Batch",
    "EVENTS_FILE",
    "KINDS",
    "META_FILE",
    "Run",
    "RunData",
    "RunFollower",
    "RunFormatError",
    "RunWriter",
    "SCHEMA_VERSION",
    "find_runs",
    "finite_float",
    "float_column",
    "is_run_dir",
    "load_run",
    "read_meta",
    "run_status",
]
