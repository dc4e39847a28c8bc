"""The end of a run the training loop did not close: an exception, interpreter exit, SIGTERM, SIGINT.

Every open probe is closed (its buffered steps written, then an end record) on the way out, and
then what would have happened without the probe happens, unchanged:

- an uncaught exception (``sys.excepthook``, chained): ``failed`` with the exception; the previous
  hook then prints the traceback as before. ``KeyboardInterrupt``: ``terminated``, ``SIGINT``.
- interpreter exit (``atexit``; in a ``multiprocessing``/``torch.multiprocessing`` child, which
  leaves through ``os._exit``, its exit finalizer): ``failed`` if an exception is on its way out
  (``sys.last_value``, a ``SystemExit`` with a non-zero code and its cause), else ``finished``.
- SIGTERM (what torchrun, Slurm and Kubernetes send first): ``terminated`` with ``"signal":
  "SIGTERM"``, then the default action is taken: the signal is raised again with ``SIG_DFL``, so
  the process ends killed by SIGTERM exactly as without the probe.
- SIGINT: the events are flushed and Python's own handler raises ``KeyboardInterrupt``; a loop
  that catches it goes on with the probe open; one that does not ends ``terminated``, ``SIGINT``.

Signal handlers are installed only in the main thread and only over the default disposition
(``SIG_DFL``, Python's ``default_int_handler``): a handler of the user's or a framework's is
left alone. A handler installed later that calls ours (Lightning chains the previous handler)
gets only the flush: ``SIG_DFL`` is not callable, so a chaining handler never runs it either.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import weakref
from types import FrameType, TracebackType
from typing import Any

#: Longest a signal handler waits for the probes' close before the signal takes its course.
SIGNAL_CLOSE_SECONDS = 10.0

_open: "weakref.WeakSet[Any]" = weakref.WeakSet()
_installed = False
_previous_excepthook: Any = None
_previous_handlers: dict[int, Any] = {}


def _forget_in_child() -> None:
    # A forked child (a DataLoader worker) inherits the probes but not their run: it must not
    # close them (their writers refuse in a child anyway, but the steps' device copies would run).
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def register(probe: Any) -> None:
    """Close ``probe`` (``probe.close(status, exception, signal=...)``) on the ways out above."""
    _open.add(probe)
    _install()


def unregister(probe: Any) -> None:
    _open.discard(probe)


def close_all(status: str, exception: BaseException | None = None, **fields: Any) -> None:
    for probe in list(_open):
        try:
            probe.close(status, exception, **fields)
        except Exception:  # one probe's failure must not keep the others open
            pass
    _open.clear()


def _install() -> None:
    global _installed, _previous_excepthook
    if _installed:
        return
    _installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    atexit.register(_at_exit)
    if multiprocessing.parent_process() is not None:
        # A multiprocessing child leaves through os._exit: atexit never runs there.
        multiprocessing.util.Finalize(None, _at_exit, exitpriority=100)
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            try:
                current = signal.getsignal(signum)
                if current is default:
                    _previous_handlers[signum] = current
                    signal.signal(signum, _on_signal)
            except (ValueError, OSError):  # not the main interpreter, or no such signal here
                pass


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    try:
        if isinstance(exc, KeyboardInterrupt):
            close_all("terminated", signal="SIGINT")
        else:
            close_all("failed", exc)
    finally:
        previous = _previous_excepthook or sys.__excepthook__
        previous(exc_type, exc, tb)


def _at_exit() -> None:
    if not _open:
        return
    exc = _leaving_exception()
    if isinstance(exc, KeyboardInterrupt):
        close_all("terminated", signal="SIGINT")
    elif exc is not None:
        close_all("failed", exc)
    else:
        close_all("finished")


def _leaving_exception() -> BaseException | None:
    """The exception the process is ending with, where Python still tells it."""
    leaving = sys.exc_info()[1]  # a multiprocessing child's finalizer runs inside ``finally``
    if isinstance(leaving, SystemExit):
        if leaving.code in (None, 0):
            return None
        return leaving.__context__ or leaving.__cause__ or leaving
    if leaving is not None:
        return leaving
    return getattr(sys, "last_value", None)  # set before sys.excepthook for an uncaught one


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    ours = signal.getsignal(signum) is _on_signal  # else a later handler chained to us
    if signum == signal.SIGINT:
        _flush_all()
        previous = _previous_handlers.get(signum, signal.default_int_handler)
        if callable(previous):
            previous(signum, frame)  # raises KeyboardInterrupt, as without the probe
        return
    if not ours:
        _flush_all()  # a chaining handler decides what happens; SIG_DFL would not have run
        return
    # The close runs in a thread with a bound: this handler interrupted the main thread
    # somewhere, maybe holding a lock of the probe's; then the close gives up at the bound.
    closer = threading.Thread(target=close_all, args=("terminated",), kwargs={"signal": name},
                              name="lrtui-probe-close", daemon=True)
    closer.start()
    closer.join(SIGNAL_CLOSE_SECONDS)
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        signal.raise_signal(signum)  # the default action: the process ends killed by it


def _flush_all() -> None:
    for probe in list(_open):
        try:
            probe.flush(timeout=2.0)
        except Exception:
            pass
