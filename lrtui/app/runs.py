"""The runs the screen shows, and the threads that read them (they know nothing of widgets).

Live and replay use the same reader (lrtui.runlog) at different speeds: live follows the file as
the job appends; replay loads the columns at once for the charts and feeds the advisor from the
same event stream, paced to the replay position.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrtui.app.curves import Curve, moving_average
from lrtui.runlog import (RunData, RunFollower, RunFormatError, find_runs, finite_float, float_column, read_meta,
                          run_status)
from lrtui.runlog.reader import events_path, gc_paused, iter_complete_blocks
from lrtui.system import SystemSampler

try:  # the advisor is the one home of every rule; the screen only shows what it says
    from lrtui.advisor import Advisor, stability_threshold, summarize_sweep
except ImportError:  # pragma: no cover - only while the advisor is not built
    Advisor = None  # type: ignore[assignment,misc]
    stability_threshold = None  # type: ignore[assignment]
    summarize_sweep = None  # type: ignore[assignment]

Notify = Callable[[str], None]

#: Largest share of one core that rebuilding a growing run's curves may take: after a build
#: that took t seconds, the next waits at least t / CURVES_CPU_SHARE.
CURVES_CPU_SHARE = 0.05
#: Largest share of one core a live run's reading thread takes at the run's live edge.
READ_CPU_SHARE = 0.5
#: How far behind the newest event may be for the reading to count as live (see READ_CPU_SHARE).
LIVE_EDGE_SECONDS = 60.0


def _make_advisor(meta: dict[str, Any]) -> tuple[Any, str | None]:
    if Advisor is None:
        return None, "advisor not available"
    try:
        return Advisor(meta), None
    except Exception as exc:  # metadata the advisor cannot use: show why, keep the charts
        return None, f"advisor: {exc}"


@dataclass
class ChartCurves:
    """The curves of one run, built once per data version (and smoothing window)."""

    loss: Curve
    loss_smooth: Curve
    grad_norm: Curve
    sharpness: dict[str, Curve]
    threshold: Curve | None
    lr: list[Curve]
    first_step: float
    last_step: float


@dataclass
class RunView:
    """One run as the screen sees it: metadata, columns, advisor state, replay position.

    The reading thread changes ``data``, ``state`` and ``version`` under ``lock``; the screen
    takes the lock only to copy references out.
    """

    path: Path
    meta: dict[str, Any] | None = None
    data: RunData = field(default_factory=RunData)
    state: Any = None
    advisor_error: str | None = None
    error: str | None = None
    skipped: int = 0
    resets: int = 0
    version: int = 0
    loaded: bool = False
    complete: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _curves: tuple[tuple[int, int], ChartCurves] | None = None
    _steps: tuple[int, np.ndarray] | None = None
    _built_at: float = 0.0
    _build_seconds: float = 0.0

    @property
    def key(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        if self.meta and self.meta.get("name"):
            return str(self.meta["name"])
        return self.path.name or str(self.path)

    @property
    def end(self) -> dict[str, Any] | None:
        ends = self.data.records.get("end") or []
        return ends[-1] if ends else None

    def status(self, now: float) -> str:
        """``waiting`` before its metadata exists, else lrtui.runlog.run_status."""
        if self.meta is None:
            return "waiting"
        return run_status(self.meta, self.end, self.data.last_time, now)

    def initial_lr(self) -> float | None:
        """The first param group's LR as the run's metadata states it."""
        try:
            return float(self.meta["optimizer"]["param_groups"][0]["lr"])  # type: ignore[index]
        except (KeyError, IndexError, TypeError, ValueError):
            return None

    def logged_steps(self) -> np.ndarray:
        """The distinct steps with a ``step`` event, sorted (cached until the data changes)."""
        with self.lock:
            version = self.version
            table = self.data.table("step")
        if self._steps is not None and self._steps[0] == version:
            return self._steps[1]
        steps = table.get("step") if table else None
        if steps is None or steps.size == 0:
            result = np.zeros(0)
        elif (bool(np.isfinite(steps[0]) and np.isfinite(steps[-1]))
              and (steps.size < 2 or bool(np.all(steps[1:] > steps[:-1])))):
            result = steps  # the usual case: finite and already increasing, no sort needed
        else:
            result = np.unique(steps[np.isfinite(steps)])
        self._steps = (version, result)
        return result

    def curves_behind(self) -> bool:
        """True when the curves last built are older than the data (rebuilds are rationed)."""
        return self._curves is not None and self._curves[0][0] != self.version

    def curves(self, smoothing: int) -> ChartCurves | None:
        """Chart curves for the current data (cached until the data or the window changes)."""
        with self.lock:
            version = self.version
            steps = self.data.table("step")
            sharp = self.data.table("sharpness")
        if self._curves is not None and self._curves[0] == (version, smoothing):
            return self._curves[1]
        now = time.monotonic()
        if (self._curves is not None and self._curves[0][1] == smoothing
                and now - self._built_at < self._build_seconds / CURVES_CPU_SHARE):
            # A long live run: rebuilding on every batch would eat the CPU; show the curves of
            # a moment ago and rebuild once the time since the last build allows it.
            return self._curves[1]
        if not steps or "step" not in steps:
            return None
        curves = build_curves(self.meta or {}, steps, sharp, smoothing)
        self._build_seconds = time.monotonic() - now
        self._built_at = now
        self._curves = ((version, smoothing), curves)
        return curves


def _column(table: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    col = table.get(name)
    if col is None or col.ndim != 1:
        return np.full(n, np.nan)
    return float_column(col)


def build_curves(meta: dict[str, Any], steps: dict[str, np.ndarray], sharp: dict[str, np.ndarray],
                 smoothing: int) -> ChartCurves:
    """Curves for the charts from the ``step`` and ``sharpness`` columns of a run."""
    x = float_column(steps["step"])
    n = x.size
    loss = _column(steps, "loss", n)
    lr = steps.get("lr")  # one column per param group; a scalar LR is one group
    lr = float_column(lr) if lr is not None and lr.ndim in (1, 2) else np.full((n, 1), np.nan)
    if lr.ndim == 1:
        lr = lr[:, None]
    if lr.shape[1] == 0:
        lr = np.full((n, 1), np.nan)
    sharpness: dict[str, Curve] = {}
    if sharp and "value" in sharp and "step" in sharp:
        methods = sharp.get("method")
        values = _column(sharp, "value", sharp["step"].size)
        sx = float_column(sharp["step"])
        if methods is None or methods.dtype != object:
            sharpness["hessian"] = Curve(sx, values)
        else:
            for method in sorted({str(m) for m in methods if m is not None}):
                mask = methods == method
                sharpness[method] = Curve(sx[mask], values[mask])
    threshold = None
    if stability_threshold is not None and meta.get("optimizer"):
        try:
            line = np.broadcast_to(float_column(np.asarray(stability_threshold(meta["optimizer"], lr[:, 0]))), x.shape)
            threshold = Curve(x, line)
        except Exception:  # an optimizer the advisor has no threshold for: no line, not a crash
            threshold = None
    finite_x = x[np.isfinite(x)]
    return ChartCurves(
        loss=Curve(x, loss),
        loss_smooth=Curve(x, moving_average(loss, smoothing)),
        grad_norm=Curve(x, _column(steps, "grad_norm", n)),
        sharpness=sharpness,
        threshold=threshold,
        lr=[Curve(x, lr[:, g]) for g in range(lr.shape[1])],
        first_step=float(finite_x.min()) if finite_x.size else 0.0,
        last_step=float(finite_x.max()) if finite_x.size else 0.0,
    )


# -- live ------------------------------------------------------------------------------------


def _at_live_edge(event: dict[str, Any]) -> bool:
    written = finite_float(event.get("time"))
    return written is not None and abs(time.time() - written) < LIVE_EDGE_SECONDS


def sweep_headline(views: list[RunView], replay: bool, now: float) -> str | None:
    """The sweep's verdict (convergence threshold, band, winners) from each run's advisor state
    as shown: in a replay, at the replay position (metrics after it are not used, and a run
    that goes on past it counts as still running); None for fewer than two runs with a state."""
    if summarize_sweep is None:
        return None
    entries, running = [], []
    for view in views:
        with view.lock:
            state, meta = view.state, view.meta
            metrics = list(view.data.records.get("metric") or [])
            last = view.data.last_step
        if state is None or meta is None:
            continue
        if replay:
            at = state.step
            metrics = [m for m in metrics if m.get("step").__class__ is int and at is not None and m["step"] <= at]
            running.append(at is None or last is None or at < last)
        else:
            running.append(view.status(now) in ("running", "stale"))
        entries.append((meta | {"name": view.name}, state, metrics))
    if len(entries) < 2:
        return None
    return "sweep: " + summarize_sweep(entries, running).headline()


class LiveSource:
    """Follows one run in a thread: appends each batch to the view, updates its advisor, notifies."""

    def __init__(self, view: RunView, notify: Notify, *, use_inotify: bool = True) -> None:
        self.view = view
        self.notify = notify
        self.use_inotify = use_inotify
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"follow {view.path.name}", daemon=True)
        self.advisor: Any = None

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        view = self.view
        try:
            with RunFollower(view.path, use_inotify=self.use_inotify) as follower:
                for batch in follower.follow(self.stop):
                    began = time.thread_time()
                    self.apply(batch.events, batch.meta, batch.reset, batch.skipped)
                    # At the live edge of a run that logs tens of thousands of events a second,
                    # leave the interpreter (one lock for all threads) to the screen after a
                    # heavy batch, so keys are still handled promptly: reading then takes at
                    # most READ_CPU_SHARE of a core. Reading a backlog (a run joined late, or
                    # more than LIVE_EDGE_SECONDS behind) goes at full speed.
                    spent = time.thread_time() - began
                    if spent > 0.005 and batch.events and _at_live_edge(batch.events[-1]):
                        self.stop.wait(spent * (1.0 - READ_CPU_SHARE) / READ_CPU_SHARE)
        except RunFormatError as exc:
            with view.lock:
                view.error = str(exc)
                view.version += 1
            self.notify(view.key)
        except Exception as exc:  # noqa: BLE001 - an unreadable run must not end the app
            with view.lock:
                view.error = f"{type(exc).__name__}: {exc}"
                view.version += 1
            self.notify(view.key)

    def apply(self, events: list[dict[str, Any]], meta: dict[str, Any] | None, reset: bool,
              skipped: int) -> None:
        """Add one batch of events to the view (called in the reading thread)."""
        view = self.view
        with view.lock:
            if reset:
                view.data = RunData()
                view.resets += 1
                self.advisor = None
            if meta is not None:
                view.meta = meta
            if self.advisor is None and view.meta is not None and view.advisor_error is None:
                self.advisor, view.advisor_error = _make_advisor(view.meta)
            view.data.extend(events)
            view.skipped += skipped
            view.loaded = True
            view.version += 1
        if self.advisor is not None and events:
            try:
                self.advisor.update_many(events)
                state = self.advisor.state()
            except Exception as exc:  # an advisor bug must not stop the reading
                state = None
                view.advisor_error = f"advisor: {type(exc).__name__}: {exc}"
            with view.lock:
                view.state = state
        self.notify(view.key)

    def close(self) -> None:
        self.stop.set()


class DirectoryScanner:
    """Looks for run directories appearing under a sweep directory, about once a second."""

    def __init__(self, root: Path, on_found: Callable[[list[Path]], None], interval: float = 1.0) -> None:
        self.root = root
        self.on_found = on_found
        self.interval = interval
        self.known: set[Path] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="scan runs", daemon=True)

    def start(self, known: list[Path]) -> None:
        self.known = set(known)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                new = [p for p in find_runs(self.root) if p not in self.known]
            except OSError:
                continue
            if new:
                self.known.update(new)
                self.on_found(new)

    def close(self) -> None:
        self.stop.set()


# -- replay ----------------------------------------------------------------------------------


def load_view(path: Path) -> RunView:
    """A whole recorded run as a view at once (its columns; the advisor is fed separately)."""
    view = RunView(path)
    load_into(view, lambda: None)
    return view


def load_into(view: RunView, on_chunk: Callable[[], None], chunk_bytes: int = 2 << 20,
              first_shown: threading.Event | None = None) -> None:
    """Load a recorded run into ``view`` chunk by chunk, calling ``on_chunk`` after each.

    With ``first_shown``, loading pauses after the first chunk until the screen has drawn it
    (at most 2 s): the two threads share one interpreter lock, and the first screen comes first.

    The same steps as lrtui.runlog.load_run (extend_block per chunk), one chunk at a time, so the first screen of a
    long replay shows as soon as its beginning is read.
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


class FrozenData:
    """The columns and records of a run at one moment (what a reading thread may keep using
    while the run goes on growing)."""

    def __init__(self, data: RunData) -> None:
        self._tables = {kind: data.table(kind) for kind in data.kinds()}
        self.records = {kind: list(recs) for kind, recs in data.records.items()}
        self.last_step = data.last_step
        self._count = data.count

    def table(self, kind: str) -> dict[str, np.ndarray]:
        return self._tables.get(kind, {})

    def kinds(self) -> list[str]:
        return list(self._tables)

    def __len__(self) -> int:
        return self._count


class RunPrefix:
    """A loaded run's events up to a step, shaped like RunData (``table``, ``records``, ``len``).

    The advisor's bulk path (``Advisor.update_data``) takes it, so seeking a replay costs one
    vectorized pass instead of feeding every event again.
    """

    def __init__(self, data: RunData | FrozenData, step: float) -> None:
        self._data = data
        self.step = step
        self._tables: dict[str, dict[str, np.ndarray]] = {}
        last = data.last_step
        self.records = {
            kind: [r for r in recs if _at_or_before(r.get("step"), step, kind, last)]
            for kind, recs in data.records.items()
        }
        self._count = sum(len(next(iter(self.table(k).values()), ())) for k in data.kinds())

    def table(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self._tables:
            table = self._data.table(kind)
            if table and "step" in table:
                steps = table["step"]
                keep = steps <= self.step if kind != "end" else np.full(steps.shape, self.step >= (self._data.last_step or 0))
                table = {name: col[keep] for name, col in table.items()}
            self._tables[kind] = table
        return self._tables[kind]

    def kinds(self) -> list[str]:
        return self._data.kinds()

    def __len__(self) -> int:
        return self._count


def _at_or_before(step: Any, position: float, kind: str, last: int | None) -> bool:
    if isinstance(step, int):
        return step <= position
    # events of no step (the end record) belong after the last step
    return last is None or position >= last


#: Field order of a rebuilt event: the columns RunData keeps for each kind.
_EVENT_RANK = {"step": 0}


def events_between(data: RunData | FrozenData, after: float, upto: float) -> list[dict[str, Any]]:
    """The step, sharpness and metric events with ``after < step <= upto``, in step order
    (a step's own event before the other events of that step), rebuilt from the columns."""
    rows: list[tuple[float, int, int, dict[str, Any]]] = []
    for kind in ("step", "sharpness"):
        table = data.table(kind)
        if not table or "step" not in table:
            continue
        steps = float_column(table["step"])
        idx = np.flatnonzero((steps > after) & (steps <= upto))
        for i in idx.tolist():
            event: dict[str, Any] = {"kind": kind}
            for name, col in table.items():
                value = col[i]
                if col.ndim == 2:
                    value = [float(v) for v in value]
                elif isinstance(value, np.generic):
                    value = value.item()
                event[name] = value
            event["step"] = int(event["step"])
            rows.append((event["step"], _EVENT_RANK.get(kind, 1), i, event))
    for record in data.records.get("metric", []):
        s = record.get("step")
        if isinstance(s, int) and after < s <= upto:
            rows.append((s, 1, len(rows), record))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    events = [r[3] for r in rows]
    last = data.last_step
    if last is not None and after < last <= upto:
        events.extend(data.records.get("end", []))
    return events


class AdvisorFeed:
    """The advisor of one recorded run, brought to a replay position.

    Small moves forward feed the advisor the events in between; a move back or a long jump
    starts a fresh advisor on the run's prefix through its bulk path (same state, one pass).
    """

    #: Moves forward over more logged steps than this take the bulk path.
    BULK_AFTER = 2000

    def __init__(self, view: RunView) -> None:
        self.view = view
        self.advisor: Any = None
        self.position: float = -np.inf
        self.reload = False  # the run was read further since it was fed: start it over

    def advance_to(self, step: float, stop: threading.Event) -> bool:
        """Bring the advisor to ``step``; False when ``stop`` was set before it finished."""
        view = self.view
        if view.meta is None:
            return True
        with view.lock:
            data = FrozenData(view.data)
        steps = data.table("step").get("step") if data.table("step") else None
        between = 0 if steps is None else int(np.count_nonzero((steps > self.position) & (steps <= step)))
        if self.advisor is None or step < self.position or between > self.BULK_AFTER:
            self.advisor, error = _make_advisor(view.meta)
            view.advisor_error = error
            if self.advisor is None:
                self.position = step
                return True
            self.advisor.update_data(RunPrefix(data, step))
        else:
            self.advisor.update_many(events_between(data, self.position, step))
        if stop.is_set():
            return False
        self.position = step
        state = self.advisor.state()
        with view.lock:
            view.state = state
        return True

    def close(self) -> None:
        self.advisor = None


class ReplayFeeder:
    """One thread that keeps every run's advisor at the replay position (the shown run first)."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.feeds: dict[str, AdvisorFeed] = {}
        self.order: list[str] = []
        self.target: float = 0.0
        self.wake = threading.Event()
        self.stop = threading.Event()
        self._interrupt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replay advisor", daemon=True)
        self._lock = threading.Lock()
        self._seeked = False

    def add(self, view: RunView) -> None:
        with self._lock:
            self.feeds[view.key] = AdvisorFeed(view)

    def loaded(self, key: str) -> None:
        """Run ``key`` has been read to its end: bring its advisor (again, from the whole run) to
        the replay position. A run still loading when the position was set was fed only its
        first part, and one added after it was not fed at all (paused, nothing seeks again)."""
        with self._lock:
            feed = self.feeds.get(key)
            if feed is None:
                return
            feed.reload = True
            if self._seeked and key not in self.order:
                self.order.append(key)
        self.wake.set()

    def seek(self, step: float, first: str | None) -> None:
        """Bring the advisors to ``step``, starting with run ``first``."""
        with self._lock:
            self.target = step
            self._seeked = True
            keys = list(self.feeds)
            if first in self.feeds:
                keys.remove(first)
                keys.insert(0, first)
            self.order = keys
        self._interrupt.set()
        self.wake.set()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            self._interrupt.clear()
            with self._lock:
                target, keys = self.target, list(self.order)
            for key in keys:
                feed = self.feeds[key]
                if feed.reload:
                    feed.reload, feed.advisor, feed.position = False, None, -np.inf
                if feed.position == target:
                    continue
                try:
                    finished = feed.advance_to(target, self._interrupt)
                except Exception as exc:  # noqa: BLE001 - show it, keep replaying
                    feed.view.advisor_error = f"advisor: {type(exc).__name__}: {exc}"
                    feed.position = target
                    finished = True
                self.notify(key)
                if not finished or self.stop.is_set():
                    break

    def close(self) -> None:
        self.stop.set()
        self._interrupt.set()
        self.wake.set()
        for feed in self.feeds.values():
            feed.close()


# -- the local machine -----------------------------------------------------------------------


class SystemSource:
    """Samples local GPUs, CPU and memory about once a second in a thread."""

    def __init__(self, sampler_factory: Callable[[], SystemSampler],
                 on_sample: Callable[[list[Any], dict[str, Any], str | None], None],
                 interval: float = 1.0) -> None:
        self.sampler_factory = sampler_factory
        self.on_sample = on_sample
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="system", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        sampler = self.sampler_factory()
        try:
            sampler.host()  # psutil's CPU percent counts from the previous call
            while True:
                self.on_sample(sampler.gpus(), sampler.host(), sampler.nvml_error)
                if self.stop.wait(self.interval):
                    break
        finally:
            sampler.close()

    def close(self) -> None:
        self.stop.set()


def discover(path: Path) -> tuple[list[Path], bool]:
    """(runs, is_sweep): the run at ``path``, or the runs inside it."""
    runs = find_runs(path)
    is_sweep = not (runs and runs[0] == path)
    return runs, is_sweep


def wall_clock() -> float:
    """The default clock of the status line (tests pass a fixed one)."""
    return time.time()


__all__ = [
    "AdvisorFeed",
    "RunPrefix",
    "events_between",
    "ChartCurves",
    "DirectoryScanner",
    "LiveSource",
    "ReplayFeeder",
    "RunView",
    "SystemSource",
    "build_curves",
    "discover",
    "FrozenData",
    "load_into",
    "load_view",
    "wall_clock",
]
