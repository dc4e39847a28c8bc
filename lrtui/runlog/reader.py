"""Load a whole run directory into numpy columns (replay, advise, your notebook).

One process reads the log from its first byte to its last, a chunk of complete lines at a time
(``lines.iter_complete_blocks``) into a ``RunData``. There is no parallel loader: on the machines
measured one process was as fast (docs/reliability.md, *The readers*), and starting helper
interpreters ran code from the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from lrtui.runlog.data import RunData
from lrtui.runlog.format import STEP_FIELDS, RunFormatError, read_meta
from lrtui.runlog.lines import gc_paused, iter_complete_blocks
from lrtui.runlog.run import Run, events_path


def load_run(path: str | os.PathLike[str], step_fields: Sequence[str] | None = None, *,
             upto: int | None = None) -> Run:
    """Load a whole run. Raises RunFormatError (one-line message) when it cannot be read.

    ``step_fields`` (schema field names of ``step`` events, e.g. the advisor's) keeps only those
    columns of the step table (``step`` always): a faster read for a reader that needs no more.
    Blocks with step lines outside the schema are read whole, as without it.

    ``upto``: read only the log's first ``upto`` bytes (a follower's ``consumed``, to catch up
    with what it has handed over and no more).
    """
    only = tuple(dict.fromkeys(step_fields)) if step_fields is not None else None
    if only is not None and not set(only) <= set(STEP_FIELDS):
        raise ValueError(f"step_fields must be among {STEP_FIELDS}")
    run_dir = Path(path)
    meta = read_meta(run_dir)
    data = RunData()
    skipped = 0
    epath = events_path(run_dir)
    try:
        f = open(epath, "rb")
    except FileNotFoundError:
        return Run(run_dir, meta, data, 0)
    except OSError as exc:
        raise RunFormatError(f"{epath}: cannot read: {exc.strerror or exc}") from None
    try:
        with f, gc_paused():
            for block, too_long in iter_complete_blocks(_Window(f, upto)):
                skipped += data.extend_block(block, only) + too_long
        data.compact()
    except OSError as exc:
        raise RunFormatError(f"{epath}: cannot read: {exc.strerror or exc}") from None
    return Run(run_dir, meta, data, skipped)


class _Window:
    """The bytes of a file from where it is now up to ``stop`` (None: to the end)."""

    def __init__(self, f: Any, stop: int | None) -> None:
        self.f, self.stop = f, stop

    def read(self, n: int) -> bytes:
        if self.stop is None:
            return self.f.read(n)
        return self.f.read(max(0, min(n, self.stop - self.f.tell())))


__all__ = ["load_run"]
