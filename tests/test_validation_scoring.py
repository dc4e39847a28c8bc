"""How the validation report compares the advisor with the ground truth (validation/scoring.py)."""

from __future__ import annotations

from validation.scoring import (
    Snapshot,
    action_outcomes,
    confusion,
    confusion_markdown,
    first_steps,
    issued_in_range,
    regime_outcome,
    right_ranges,
)

CP = ([0, 100, 200, 300], [2.0, 1.0, 50.0, 60.0])  # healthy until step 200, blown up after


def label(regime, **actions):
    base = {"drop_lr": "wrong", "start_averaging": "wrong", "lower_lr": "wrong", "rollback": "wrong"}
    return {"regime": regime, "actions": {**base, **actions}}


def test_regime_outcome() -> None:
    assert regime_outcome("equilibrium", "constant", "equilibrium") == "match"
    assert regime_outcome("equilibrium", "constant", "warmup") == "miss"
    assert regime_outcome("converging", "warmup", "warmup") == "match"  # no verdict asked in a warm-up
    assert regime_outcome("converging", "decay", "warmup") == "miss"
    assert regime_outcome("unclear", "constant", "chance") == "unscored"


def test_action_outcomes_judge_what_is_in_force_and_name_what_is_missing() -> None:
    snap = Snapshot(150, "equilibrium", [{"action": "drop_lr", "step": 120}, {"action": "raise_lr", "step": 10}])
    rows = action_outcomes(label("equilibrium", drop_lr="right", start_averaging="right"), snap, *CP)
    assert {"action": "drop_lr", "issued_at": 120, "verdict": "right"} in rows
    assert {"action": "start_averaging", "issued_at": None, "verdict": "missing"} in rows
    assert all(r["action"] != "raise_lr" for r in rows)  # not judged per point
    stale = Snapshot(150, "converging", [{"action": "lower_lr", "step": 40}])
    assert action_outcomes(label("converging"), stale, *CP) == [{"action": "lower_lr", "issued_at": 40, "verdict": "wrong"}]


def test_a_rollback_to_a_blown_up_step_is_wrong_even_where_rolling_back_is_right() -> None:
    truth = label("diverged", lower_lr="right", rollback="right")
    good = Snapshot(300, "diverged", [{"action": "rollback", "step": 250, "to_step": 150}, {"action": "lower_lr", "step": 250}])
    bad = Snapshot(300, "diverged", [{"action": "rollback", "step": 250, "to_step": 210}, {"action": "lower_lr", "step": 250}])
    assert {r["verdict"] for r in action_outcomes(truth, good, *CP)} == {"right"}
    assert [r["verdict"] for r in action_outcomes(truth, bad, *CP) if r["action"] == "rollback"] == ["wrong"]


def test_right_ranges_and_where_an_issued_action_lies() -> None:
    points = [{"step": s, "actions": {"drop_lr": v}} for s, v in
              [(100, "wrong"), (250, "right"), (500, "right"), (750, "wrong"), (1000, "right")]]
    assert right_ranges(points, "drop_lr") == [(250, 500), (1000, 1000)]
    assert issued_in_range(300, points, "drop_lr") == "right"
    assert issued_in_range(50, points, "drop_lr") == "wrong"  # only the point after it
    assert issued_in_range(600, points, "drop_lr") == "edge"
    assert issued_in_range(None, points, "drop_lr") == "unclear"


def test_confusion_table_has_every_truth_row_and_advisor_column() -> None:
    table = confusion([("converging", "converging"), ("converging", "warmup"), ("chance", "equilibrium")])
    md = confusion_markdown(table)
    assert "| converging | 1 | 1 | 0 | 0 | 0 | 2 |" in md
    assert "| chance | 0 | 0 | 1 | 0 | 0 | 1 |" in md
    assert "| unclear | 0 | 0 | 0 | 0 | 0 | 0 |" in md


def test_first_steps() -> None:
    assert first_steps([(10, "warmup"), (50, "converging"), (90, "warmup"), (120, "equilibrium")]) == {
        "warmup": 10, "converging": 50, "equilibrium": 120}
