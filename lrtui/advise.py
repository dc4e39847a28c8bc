"""The ``lrtui advise`` command: the advisor's verdict on a run or a sweep, for people and scripts."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from lrtui.advisor import (STEP_FIELDS_READ, Advisor, AdvisorState, Recommendation, SweepResult, analyze_sweep,
                           summarize_sweep)
from lrtui.advisor.words import stability_words
from lrtui.errors import EXIT_DIVERGED, EXIT_OK, UserError
from lrtui.runlog import Batch, Run, RunFollower, RunFormatError, find_runs, is_run_dir, load_run, run_status
from lrtui.runlog.data import MAX_COLUMNS
from lrtui.text import printable

#: Poll interval of ``--follow`` (with ``--poll``, or as inotify's backstop).
FOLLOW_POLL_SECONDS = 0.25
#: Recommendations shown in the human output (the latest); --json has every one.
SHOWN_RECOMMENDATIONS = 4
#: ``--follow`` on a sweep: seconds between looks for new runs (and recomputations of its verdict).
SWEEP_LOOK_SECONDS = 1.0
#: ... and how long it waits for a new run once every run has ended (a sweep run one LR after
#: another starts its next run within this).
SWEEP_GRACE_SECONDS = 5.0


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "?" if x is None else format(x, fmt)


def describe_state(st: AdvisorState, name: str) -> list[str]:
    """A few lines for people: regime, LR, sharpness against its threshold, alerts, recommendations."""
    lines = [f"{name}: step {st.step if st.step is not None else '-'}, regime {st.regime}"
             + (f" (loss level {st.loss_level:.4g})" if st.loss_level is not None else "")
             + (f", run {st.end_status}" if st.ended and st.end_status else "")]
    if st.diverged_at_step is not None:
        lines.append(f"  diverged: {st.divergence_reason} from step {st.diverged_at_step} "
                     f"(detected at step {st.divergence_flagged_at_step})")
    lines.append(f"  lr {_num(st.lr)} · {stability_words(st)}")
    shown = [a for a in st.alerts if a.severity != "info"][-3:]
    for a in shown:
        lines.append(f"  {a.severity}: step {a.step}: {a.message}")
    if len(st.recommendations) > SHOWN_RECOMMENDATIONS:
        lines.append(f"  ({len(st.recommendations) - SHOWN_RECOMMENDATIONS} earlier recommendations; --json has all)")
    for r in st.recommendations[-SHOWN_RECOMMENDATIONS:]:
        lines.append("  " + describe_recommendation(r))
    for d in st.done[-SHOWN_RECOMMENDATIONS:]:
        lines.append(f"  done: {d.recommendation.action} (step {d.recommendation.step}): {d.how}")
    if st.withdrawn:
        lines.append(f"  {len(st.withdrawn)} earlier recommendation(s) withdrawn (--json has them and why)")
    if not st.recommendations:
        lines.append("  no recommendation in force")
    return lines


def _key(r: Recommendation) -> tuple[Any, ...]:
    return r.action, r.step, r.reason


def describe_recommendation(r: Recommendation) -> str:
    """One line for one recommendation."""
    return f"recommend {r.action} (step {r.step}): {r.reason}"


def describe_sweep(result: SweepResult) -> list[str]:
    """A few lines for a sweep: each run's pre-training regime, the threshold, the band, the winner."""
    lines = []
    for r in result.runs:
        acc = " ".join(f"{p} test_acc {v:.4f}" for p, v in r.test_acc.items() if p in ("finetune", "swa"))
        div = f", diverged at step {r.state.diverged_at_step}" if r.state.diverged_at_step is not None else ""
        lines.append(f"{r.name}: lr {_num(r.initial_lr, '.3g')}: {r.pretrain_regime}{div}"
                     + (f" · {acc}" if acc else ""))
    lo, hi = result.threshold_interval
    if result.convergence_threshold_lr is not None:
        lines.append(f"convergence threshold ≈ {result.convergence_threshold_lr:.3g} (between {lo:.3g}, the "
                     f"largest LR that converged, and {hi:.3g}, the smallest above it that did not)")
    else:
        lines.append("convergence threshold unknown: "
                     + ("no run converged" if lo is None else "every run converged"))
    if result.recommended_initial_lr is not None:
        a, b = result.recommended_initial_lr
        capped = result.capped_by
        lines.append(f"recommended initial lr: {a:.3g} .. {b:.3g} (slightly above the threshold)" if capped is None
                     else f"recommended initial lr: {a:.3g} .. below {b:.3g} (capped: lr {b:.3g}, run "
                          f"{capped['run']}, was {capped['regime']})")
    for phase, best in result.best.items():
        where = {True: "in the band", False: "outside the band", None: ""}[result.winner_in_band(phase)]
        lines.append(f"best after {phase}: lr {_num(best['lr'], '.3g')} ({best['run']}), "
                     f"test_acc {best['test_acc']:.4f}" + (f" - {where}" if where else ""))
    missed = [p for p in result.best if result.winner_in_band(p) is False]
    if missed:
        lines.append(f"note: in this sweep the band above the threshold (the paper's finding) did not "
                     f"hold the best accuracy after {' or '.join(missed)}; trust the winner measured here")
    if result.inconsistent:
        lines.append("note: did not converge below an LR that did: " + ", ".join(result.inconsistent))
    return lines


def _emit(out: TextIO, text: str) -> None:
    """Print lines for people, without anything a terminal would obey (``lrtui.text``); JSON
    (``json.dumps`` escapes every control character) passes unchanged."""
    out.write("\n".join(map(printable, text.split("\n"))) + "\n")
    out.flush()


#: What ``advise`` says of a run's status (text); ``--json`` has the word in ``status``.
STATUS_WORDS = {
    "crashed": "run crashed: no end record, and no live process holds it",
    "stale": "run stale: no end record, and nothing logged for over a minute",
    "running": "run still running",
}


def describe_reading(run: Run, status: str) -> list[str]:
    """Lines on how the run was read: its status when it has no end record, lines skipped,
    fields left out of the columns."""
    lines = [f"  {STATUS_WORDS[status]}"] if status in STATUS_WORDS else []
    if run.skipped_lines:
        lines.append(f"  skipped {run.skipped_lines:,} line(s) that are not events (garbage, or over 1 MiB)")
    for kind, n in run.data.dropped_fields.items():
        lines.append(f"  {n:,} {kind} field name(s) beyond the first {MAX_COLUMNS} not read as columns"
                     + (" (the advisor reads metrics whole)" if kind == "metric" else ""))
    return lines


def _reading_json(run: Run, status: str) -> dict[str, Any]:
    return {"status": status, "skipped_lines": run.skipped_lines, "dropped_fields": run.data.dropped_fields}


def _advise_once(path: Path, as_json: bool, out: TextIO, threshold: float | None = None) -> int:
    runs = find_runs(path)
    if is_run_dir(path):
        run = load_run(path, step_fields=STEP_FIELDS_READ)
        st = Advisor.from_run(run, convergence_threshold_lr=threshold).state()
        status = run.status()
        if as_json:
            _emit_json(out, st.to_json(run.name) | _reading_json(run, status))
        else:
            _emit(out, "\n".join(describe_state(st, run.name) + describe_reading(run, status)))
        return EXIT_DIVERGED if st.diverged else EXIT_OK
    if not runs:
        raise UserError(f"{path}: neither a run directory nor a directory of runs")
    loaded = [load_run(p, step_fields=STEP_FIELDS_READ) for p in runs]
    statuses = [r.status() for r in loaded]
    result = analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in loaded],
                           running=[s == "running" for s in statuses])
    if as_json:
        _emit_json(out, result.to_json() | {"reading": {r.name: _reading_json(r, s) for r, s in zip(loaded, statuses)}})
    else:
        notes = []
        for r, s in zip(loaded, statuses):
            notes += [f"{r.name}:{line}" for line in describe_reading(r, s)]
        _emit(out, "\n".join(describe_sweep(result) + notes))
    return EXIT_OK


def _emit_json(out: TextIO, obj: Any) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


class _Tail:
    """One run followed by ``--follow``: its follower, its advisor, the recommendations printed."""

    def __init__(self, path: Path, poll: bool, wake: threading.Event | None = None,
                 threshold: float | None = None) -> None:
        self.path = path
        self.name = path.name
        self.follower = RunFollower(path, poll_interval=FOLLOW_POLL_SECONDS, use_inotify=not poll, wake=wake)
        self.advisor: Advisor | None = None
        self.printed: set[tuple[Any, ...]] = set()  # the recommendations printed
        self.shown_withdrawn = 0
        self.threshold = threshold  # the convergence threshold its advice aims by, once known

    def know_threshold(self, threshold: float | None) -> None:
        """The sweep has measured its threshold: advice from now on aims by it."""
        self.threshold = threshold
        if self.advisor is not None:
            self.advisor.convergence_threshold_lr = threshold

    def take(self, batch: Batch, as_json: bool, out: TextIO) -> None:
        """Feed one batch to the advisor and print each recommendation it gave rise to."""
        if batch.reset or (batch.meta is not None and self.advisor is None):
            meta = batch.meta or self.follower.meta or {}
            self.name = str(meta.get("name") or self.path.name)
            self.advisor = Advisor(meta, convergence_threshold_lr=self.threshold)
            self.printed, self.shown_withdrawn = set(), 0
            if batch.reset and not as_json:
                _emit(out, f"{self.name}: the run log was replaced; starting over")
        if self.advisor is None:
            return
        if batch.resume is not None:
            # Resumed: steps from K on are logged again and replace the earlier ones. The advisor
            # starts over from the log as read so far (the replaced events dropped by the loader),
            # this batch included; the recommendations already printed are not printed again.
            run = load_run(self.path, step_fields=STEP_FIELDS_READ, upto=self.follower.consumed)
            self.advisor = Advisor(self.follower.meta or run.meta,
                                   convergence_threshold_lr=self.threshold).update_data(run.data)
            self.shown_withdrawn = min(self.shown_withdrawn, len(self.advisor.state().withdrawn))
        else:
            self.advisor.update_many(batch.events)
        st = self.advisor.state()
        for r in st.recommendations:
            if _key(r) not in self.printed:
                self.printed.add(_key(r))
                _emit(out, json.dumps({"run": self.name, **r.to_json()}) if as_json
                      else f"{self.name}: " + describe_recommendation(r))
        for w in st.withdrawn[self.shown_withdrawn:]:
            _emit(out, json.dumps({"run": self.name, "withdrawn": True, **w.to_json()}) if as_json
                  else f"{self.name}: withdrawn {w.recommendation.action} (step {w.recommendation.step}) at step "
                       f"{w.withdrawn_at_step}: {w.why}")
        self.shown_withdrawn = len(st.withdrawn)

    @property
    def done(self) -> bool:
        """The run has ended: everything in its log has been read, and its end record was among
        it (a resume after an end record makes it go on), or its process is gone without one."""
        return self.advisor is not None and self.follower.caught_up and (self.advisor.ended or self.crashed)

    @property
    def crashed(self) -> bool:
        return run_status(self.follower.meta or {}, None, None, run_dir=self.path) == "crashed"

    def final_state(self) -> AdvisorState | None:
        if self.advisor is None:
            return None
        self.advisor.flush()  # a crashed run has no end record to release the last side events
        return self.advisor.state()


def _follow(path: Path, as_json: bool, poll: bool, out: TextIO, stop: threading.Event | None = None,
            threshold: float | None = None) -> int:
    if not is_run_dir(path) and find_runs(path):
        return _follow_sweep(path, as_json, poll, out, stop)
    tail = _Tail(path, poll, threshold=threshold)
    with tail.follower:
        for batch in tail.follower.follow(stop):
            tail.take(batch, as_json, out)
            if tail.done:
                break
    st = tail.final_state()
    if st is None:
        return EXIT_OK
    if not as_json:
        notes = [f"  {STATUS_WORDS['crashed']}"] if not st.ended and tail.crashed else []
        if tail.follower.skipped_total:
            notes.append(f"  skipped {tail.follower.skipped_total:,} line(s) that are not events (garbage, or over 1 MiB)")
        _emit(out, "\n".join(describe_state(st, tail.name) + notes))
    return EXIT_DIVERGED if st.diverged else EXIT_OK


def _sweep_so_far(tails: list[_Tail]) -> SweepResult:
    entries, running = [], []
    for t in tails:
        if t.advisor is not None:
            entries.append((t.advisor.meta | {"name": t.name}, t.advisor.state(), t.advisor.metric_events))
            running.append(not t.done)
    return summarize_sweep(entries, running)


def _sweep_update(name: str, result: SweepResult, tails: list[_Tail]) -> dict[str, Any]:
    """The sweep-level part of the verdict, as one ``--follow --json`` line."""
    return {"sweep": name, "runs": len(tails), "runs_ended": sum(t.done for t in tails), **result.verdict_json()}


def _verdict_key(update: dict[str, Any]) -> Any:
    """What a new ``--follow`` line is printed for: runs found or ended, the threshold, the band,
    a new winner (a winner's accuracy moving while it fine-tunes is not news)."""
    return (update["runs"], update["runs_ended"], update["convergence_threshold_interval"],
            update["recommended_initial_lr"], {p: b["run"] for p, b in update["best"].items()},
            update["inconsistent_runs"])


def describe_sweep_update(update: dict[str, Any], result: SweepResult) -> str:
    """One line for a change of a followed sweep's verdict."""
    return f"sweep {update['sweep']} ({update['runs_ended']} of {update['runs']} runs ended): {result.headline()}"


def _follow_sweep(path: Path, as_json: bool, poll: bool, out: TextIO, stop: threading.Event | None) -> int:
    """Follow every run of a sweep directory, and runs that appear in it, until all have ended.

    Prints each run's new recommendations (named by run) and, whenever it changes
    (``_verdict_key``), the sweep's verdict: its convergence threshold, recommended band and
    winners so far. A run still in its pre-training with no stationary verdict bounds the
    threshold neither way (it may converge yet).
    Ends when every run has ended and no new run has appeared for ``SWEEP_GRACE_SECONDS``.
    """
    stop = stop or threading.Event()
    wake = threading.Event()
    tails: dict[Path, _Tail] = {}
    broken: set[Path] = set()
    last: Any = None
    last_threshold: float | None = None
    next_look = 0.0
    all_ended_since: float | None = None
    try:
        while not stop.is_set():
            now = time.monotonic()
            look = now >= next_look
            if look:
                next_look = now + SWEEP_LOOK_SECONDS
                for p in find_runs(path):
                    if p not in tails and p not in broken:
                        tails[p] = _Tail(p, poll, wake, last_threshold)
                        all_ended_since = None
            for p, tail in list(tails.items()):
                try:
                    batch = tail.follower.read_new()
                except RunFormatError as exc:  # one unreadable run must not end the others
                    print(f"lrtui: {exc}; not followed", file=sys.stderr, flush=True)
                    tail.follower.close()
                    del tails[p]
                    broken.add(p)
                    continue
                if batch.events or batch.reset or batch.meta is not None:
                    tail.take(batch, as_json, out)
            ended = all(t.done for t in tails.values())
            if look or ended:
                result = _sweep_so_far(list(tails.values()))
                last_threshold = result.convergence_threshold_lr
                for tail in tails.values():
                    tail.know_threshold(last_threshold)
                update = _sweep_update(path.name, result, list(tails.values()))
                key = _verdict_key(update)
                if key != last:
                    last = key
                    _emit(out, json.dumps(update) if as_json else describe_sweep_update(update, result))
            if ended and tails:
                all_ended_since = now if all_ended_since is None else all_ended_since
                if now - all_ended_since >= SWEEP_GRACE_SECONDS:
                    break
            if not wake.is_set():
                wake.wait(FOLLOW_POLL_SECONDS)
            wake.clear()
    finally:
        for tail in tails.values():
            tail.follower.close()
    if not as_json:
        for tail in tails.values():
            tail.final_state()  # releases a crashed run's last side events
        _emit(out, "\n".join(describe_sweep(_sweep_so_far(list(tails.values())))))
    return EXIT_OK


def advise_main(args: argparse.Namespace) -> int:
    """Entry point of ``lrtui advise``: exit 0, 3 when the run has diverged, 2 for bad input."""
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory")
    threshold = getattr(args, "threshold_lr", None)
    if threshold is not None and not is_run_dir(path) and find_runs(path):
        raise UserError(f"{path}: --threshold-lr is for one run; a sweep measures its own threshold")
    if getattr(args, "follow", False):
        return _follow(path, bool(args.json), bool(getattr(args, "poll", False)), sys.stdout, threshold=threshold)
    return _advise_once(path, bool(args.json), sys.stdout, threshold)


__all__ = ["advise_main", "describe_recommendation", "describe_state", "describe_sweep", "describe_sweep_update"]
