"""Comparing the advisor's answers with the ground truth: pure functions on plain data.

The report (``validation.report``) takes, at every report point of a run, the advisor's state
after every event up to that step (``Snapshot``) and the point's label (``validation.truth``),
and these functions decide what counts as a match, a miss or an action in the right place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from validation.truth import JUDGED_ACTIONS, healthy_before

#: The advisor's regimes, in table order (``warmup``: no verdict yet).
ADVISOR_REGIMES = ("warmup", "converging", "equilibrium", "chance", "diverged")
TRUTH_REGIMES = ("converging", "equilibrium", "chance", "diverged", "unclear")


@dataclass
class Snapshot:
    """The advisor at one report point: its regime and the recommendations in force.

    ``recommendations`` are dicts with at least ``action`` and ``step`` (and ``to_step`` for a
    rollback); ``withdrawn`` and ``done`` are what an advisor with those lists reports (empty
    for one without).
    """

    step: int | None
    regime: str
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    withdrawn: list[dict[str, Any]] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)


def regime_outcome(truth_regime: str, phase: str | None, advisor_regime: str) -> str:
    """``match``, ``miss`` or ``unscored`` for one report point.

    An ``unclear`` truth is not scored. During a warm-up phase the advisor may also say
    ``warmup`` (the issue asks for the edge of stability there, not a regime); after it,
    ``warmup`` is a miss like any other wrong answer.
    """
    if truth_regime == "unclear":
        return "unscored"
    if advisor_regime == truth_regime:
        return "match"
    if phase == "warmup" and advisor_regime == "warmup":
        return "match"
    return "miss"


def action_outcomes(label: dict[str, Any], snapshot: Snapshot, checkpoint_steps: Sequence[int],
                    checkpoint_losses: Sequence[float]) -> list[dict[str, Any]]:
    """Every judged recommendation in force at a point with the truth's verdict on it, plus a
    ``missing`` row for each judged action the truth calls right that is not in force.

    A rollback whose target step was not healthy (``validation.truth.healthy_before``) is wrong
    whatever the regime. Rows: ``{"action", "issued_at", "verdict"}``, verdict one of ``right``,
    ``wrong``, ``early``, ``unclear``, ``missing``.
    """
    rows = []
    present = set()
    for rec in snapshot.recommendations:
        action = rec.get("action")
        if action not in JUDGED_ACTIONS:
            continue
        present.add(action)
        verdict = label["actions"].get(action, "unclear")
        if (action == "rollback" and verdict == "right" and isinstance(rec.get("to_step"), int)
                and healthy_before(rec["to_step"], checkpoint_steps, checkpoint_losses) is False):
            verdict = "wrong"
        rows.append({"action": action, "issued_at": rec.get("step"), "verdict": verdict})
    for action in JUDGED_ACTIONS:
        if action not in present and label["actions"].get(action) == "right" and action != "rollback":
            rows.append({"action": action, "issued_at": None, "verdict": "missing"})
    return rows


def right_ranges(points: Sequence[dict[str, Any]], action: str) -> list[tuple[int, int]]:
    """Step ranges [first, last] of consecutive report points at which ``action`` is right."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    last: int | None = None
    for p in points:
        if p["actions"].get(action) == "right":
            if start is None:
                start = p["step"]
            last = p["step"]
        elif start is not None and last is not None:
            out.append((start, last))
            start = None
    if start is not None and last is not None:
        out.append((start, last))
    return out


def issued_in_range(step: int | None, points: Sequence[dict[str, Any]], action: str) -> str:
    """Where a recommendation issued at ``step`` lies against the truth: the truth's verdict on
    the action (``right``, ``wrong``, ``early``) when the report points on both sides of it (or
    the one side there is) agree, ``edge`` when they differ, ``unclear`` when either side is
    unclear or there is no step."""
    if step is None or not points:
        return "unclear"
    before = [p for p in points if p["step"] <= step]
    after = [p for p in points if p["step"] >= step]
    sides = {s[-1 if s is before else 0]["actions"].get(action, "unclear") for s in (before, after) if s}
    if "unclear" in sides:
        return "unclear"
    return sides.pop() if len(sides) == 1 else "edge"


def confusion(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Counts of (truth regime, advisor regime)."""
    table: dict[tuple[str, str], int] = {}
    for pair in pairs:
        table[pair] = table.get(pair, 0) + 1
    return table


def confusion_markdown(table: dict[tuple[str, str], int]) -> str:
    """The confusion table as Markdown: ground truth in rows, the advisor in columns."""
    cols = list(ADVISOR_REGIMES) + sorted({a for _, a in table} - set(ADVISOR_REGIMES))
    lines = ["| ground truth \\ advisor | " + " | ".join(cols) + " | total |",
             "|---" * (len(cols) + 2) + "|"]
    for truth in TRUTH_REGIMES:
        row = [table.get((truth, c), 0) for c in cols]
        lines.append(f"| {truth} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return "\n".join(lines)


def first_steps(timeline: Sequence[tuple[int, str]]) -> dict[str, int]:
    """The first step at which each value of a (step, value) timeline appeared."""
    out: dict[str, int] = {}
    for step, value in timeline:
        out.setdefault(value, step)
    return out
