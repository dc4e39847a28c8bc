"""The ``lrtui advise`` command: the advisor's verdict on a run or a sweep, for people and scripts."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from lrtui.advisor import STEP_FIELDS_READ, Advisor, AdvisorState, Recommendation, SweepResult, analyze_sweep
from lrtui.errors import EXIT_DIVERGED, EXIT_OK, UserError
from lrtui.runlog import RunFollower, find_runs, is_run_dir, load_run, run_status

#: Poll interval of ``--follow`` (with ``--poll``, or as inotify's backstop).
FOLLOW_POLL_SECONDS = 0.25
EDGE_WORDS = {"below": "below the edge of stability", "at_edge": "at the edge of stability",
              "above": "above the edge of stability"}
#: Recommendations shown in the human output (the latest); --json has every one.
SHOWN_RECOMMENDATIONS = 4


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
    lr = f"  lr {_num(st.lr)}"
    if st.sharpness is not None:
        lr += (f" · sharpness {st.sharpness:.4g} ({st.sharpness_method}, step {st.sharpness_step})"
               f" vs threshold {_num(st.sharpness_threshold)}")
        if st.stability_ratio is not None:
            lr += f" = {st.stability_ratio:.2f}x, {EDGE_WORDS.get(st.edge or '', 'unknown')}"
        if st.max_stable_lr is not None:
            lr += f"; largest stable lr {st.max_stable_lr:.3g}"
    elif st.sharpness_threshold is not None:
        lr += f" · stability threshold {st.sharpness_threshold:.4g} (no sharpness logged)"
    else:
        lr += f" · no stability threshold known for {st.optimizer or 'this optimizer'}"
    lines.append(lr)
    shown = [a for a in st.alerts if a.severity != "info"][-3:]
    for a in shown:
        lines.append(f"  {a.severity}: step {a.step}: {a.message}")
    if len(st.recommendations) > SHOWN_RECOMMENDATIONS:
        lines.append(f"  ({len(st.recommendations) - SHOWN_RECOMMENDATIONS} earlier recommendations; --json has all)")
    for r in st.recommendations[-SHOWN_RECOMMENDATIONS:]:
        lines.append("  " + describe_recommendation(r))
    if not st.recommendations:
        lines.append("  no recommendation yet")
    return lines


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
        lines.append(f"recommended initial lr: {a:.3g} .. {b:.3g} (slightly above the threshold)")
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
    out.write(text + "\n")
    out.flush()


def _advise_once(path: Path, as_json: bool, out: TextIO) -> int:
    runs = find_runs(path)
    if is_run_dir(path):
        run = load_run(path, step_fields=STEP_FIELDS_READ, workers=None)
        st = Advisor.from_run(run).state()
        if as_json:
            _emit(out, json.dumps(st.to_json(run.name)))
        else:
            _emit(out, "\n".join(describe_state(st, run.name)))
        return EXIT_DIVERGED if st.diverged else EXIT_OK
    if not runs:
        raise UserError(f"{path}: neither a run directory nor a directory of runs")
    loaded = [load_run(p, step_fields=STEP_FIELDS_READ, workers=None) for p in runs]
    result = analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in loaded])
    if as_json:
        _emit(out, json.dumps(result.to_json()))
    else:
        _emit(out, "\n".join(describe_sweep(result)))
    return EXIT_OK


def _follow(path: Path, as_json: bool, poll: bool, out: TextIO, stop: threading.Event | None = None) -> int:
    if not is_run_dir(path) and find_runs(path):
        raise UserError(f"{path}: --follow takes one run directory, not a sweep")
    advisor: Advisor | None = None
    shown = 0
    name = path.name
    with RunFollower(path, poll_interval=FOLLOW_POLL_SECONDS, use_inotify=not poll) as follower:
        for batch in follower.follow(stop):
            if batch.reset or (batch.meta is not None and advisor is None):
                meta = batch.meta or follower.meta or {}
                name = str(meta.get("name") or path.name)
                advisor, shown = Advisor(meta), 0
                if batch.reset and not as_json:
                    _emit(out, f"{name}: the run log was replaced; starting over")
            if advisor is None:
                continue
            advisor.update_many(batch.events)
            st = advisor.state()
            for r in st.recommendations[shown:]:
                if as_json:
                    _emit(out, json.dumps({"run": name, **r.to_json()}))
                else:
                    _emit(out, f"{name}: " + describe_recommendation(r))
            shown = len(st.recommendations)
            if advisor.ended or run_status(follower.meta or {}, None, None) == "crashed":
                break
    if advisor is None:
        return EXIT_OK
    advisor.flush()  # a crashed run has no end record to release the last side events
    st = advisor.state()
    if not as_json:
        _emit(out, "\n".join(describe_state(st, name)))
    return EXIT_DIVERGED if st.diverged else EXIT_OK


def advise_main(args: argparse.Namespace) -> int:
    """Entry point of ``lrtui advise``: exit 0, 3 when the run has diverged, 2 for bad input."""
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory")
    if getattr(args, "follow", False):
        return _follow(path, bool(args.json), bool(getattr(args, "poll", False)), sys.stdout)
    return _advise_once(path, bool(args.json), sys.stdout)


__all__ = ["advise_main", "describe_recommendation", "describe_state", "describe_sweep"]
