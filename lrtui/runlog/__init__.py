"""The run directory: its format, a writer for the training process, and readers for everyone else.

``format`` is the contract (docs/run-format.md in code), ``writer`` the training side
(``RunWriter``); the readers: ``lines`` (complete lines, step lines, cuts at resumes),
``numbers`` (the one home of "maybe a number"), ``columns`` (events to numpy columns), ``data``
(``RunData``: a run's columns, resumes applied), ``run`` (``Run``, ``run_status``, ``find_runs``),
``reader`` (``load_run``), ``follower`` (live runs: ``RunFollower``, ``Batch``).
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
from lrtui.runlog.data import RunData
from lrtui.runlog.numbers import finite_float, float_column
from lrtui.runlog.reader import load_run
from lrtui.runlog.run import Run, find_runs, planned_lr, run_status
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
    "planned_lr",
    "read_meta",
    "run_status",
]
