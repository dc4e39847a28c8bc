"""Reading a recorded run into its RunView chunk by chunk, so a long replay shows its start at once."""

from __future__ import annotations

import threading
import time
from typing import Callable

from lrtui.app.runview import RunView
from lrtui.runlog import RunFormatError, read_meta
from lrtui.runlog.lines import gc_paused, iter_complete_blocks
from lrtui.runlog.run import events_path


def load_into(view: RunView, on_chunk: Callable[[], None], chunk_bytes: int = 2 << 20,
              first_shown: threading.Event | None = None) -> None:
    """Load a recorded run into ``view`` chunk by chunk, calling ``on_chunk`` after each.

    With ``first_shown``, loading pauses after the first chunk until the screen has drawn it
    (at most 2 s): the two threads share one interpreter lock, and the first screen comes first.

    The same steps as lrtui.runlog.load_run (extend_block per chunk), one chunk at a time. (The
    reader offers no chunked load of its own yet; when it does, this loop becomes a call.)
    """
    try:
        meta = read_meta(view.path)
        epath = events_path(view.path)
    except RunFormatError as exc:
        with view.lock:
            view.error, view.loaded, view.complete = str(exc), True, True
            view.version += 1
        on_chunk()
        return
    with view.lock:
        view.meta = meta
        view.version += 1
    try:
        if epath.exists():
            with open(epath, "rb") as f, gc_paused():
                for block, too_long in iter_complete_blocks(f, chunk_bytes):
                    with view.lock:
                        view.skipped += view.data.extend_block(block) + too_long
                        view.loaded = True
                        view.version += 1
                    on_chunk()
                    if first_shown is not None:
                        first_shown.wait(2.0)
                        first_shown = None
                    time.sleep(0.005)  # let the screen take its turn between chunks
    except OSError as exc:
        with view.lock:
            view.error = f"{epath}: cannot read: {exc.strerror or exc}"
    with view.lock:
        view.loaded = view.complete = True
        view.version += 1
    on_chunk()


__all__ = ["load_into"]
