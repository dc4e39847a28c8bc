"""Which command follows the advice in force (lrtui.advice_action), and the action markers the LR
chart draws: plain data, no app."""

from __future__ import annotations

import numpy as np
import pytest

from lrtui.advice_action import describe_change, propose
from lrtui.advisor import AdvisorState, Recommendation
from lrtui.advisor.recommend import drop_lr, lower_lr_chance, lower_lr_diverged, raise_lr, start_averaging
from lrtui.app.chart import GUTTER, MARKER, ChartSpec, Series, render_chart
from lrtui.app.curves import Curve
from lrtui.control import parse_command


def state(*recs: Recommendation, lrs: list[float] = [0.1, 0.01], **kw: object) -> AdvisorState:  # noqa: B006
    return AdvisorState(step=500, regime="equilibrium", lr=lrs[0] if lrs else None, lrs=lrs, recommendations=list(recs), **kw)


def test_drop_and_averaging_in_the_advisors_order_with_every_groups_lr() -> None:
    drop = drop_lr(400, 0.1, 0.8, (200, 400), (-0.02, 0.03), 0.0, None)
    avg = start_averaging(400, 0, 0.8)
    proposals, why = propose(state(drop, avg))
    assert why == "" and [p.action for p in proposals] == ["drop_lr", "start_averaging"]
    assert proposals[0].lr_after == pytest.approx((0.01, 0.001))
    assert proposals[0].what() == "drop_lr: lr 0.1, 0.01 -> 0.01, 0.001"
    assert proposals[1].lr_after == proposals[1].lr_before and "lr stays 0.1, 0.01" in proposals[1].what()
    cmd = proposals[0].command("r1", "app", "test")
    parsed = parse_command(cmd.encode(), cmd.id, "r1")  # a valid command file for the run
    assert (parsed.action, parsed.source, parsed.lr, parsed.recommendation_step) == ("drop_lr", "app", pytest.approx(0.01), 400)
    avg_cmd = proposals[1].command("r1", "app", "t")
    assert parse_command(avg_cmd.encode(), avg_cmd.id, "r1").averaging == avg_cmd.averaging
    assert avg_cmd.averaging is not None and avg_cmd.averaging.checkpoint_every == avg.numbers["checkpoint_every"]


def test_lower_lr_is_set_lr_by_a_factor_except_after_a_divergence() -> None:
    chance = lower_lr_chance(300, 0.1, 2.3, 2.3, None)
    (p,), _ = propose(state(chance))
    assert p.action == "set_lr" and p.factor == pytest.approx(chance.numbers["new_lr"] / 0.1)
    assert p.lr_after == pytest.approx(tuple(v * p.factor for v in (0.1, 0.01)))
    diverged = lower_lr_diverged(300, 0.1, 250, "loss rose")
    proposals, why = propose(state(diverged))
    assert proposals == [] and "after a divergence" in why
    proposals, why = propose(state(raise_lr(300, 0.1, 0.005, None)))
    assert proposals == [] and why == "no recommendation in force that a command can follow (raise_lr)"
    assert propose(state()) == ([], "no recommendation in force")
    assert propose(state(chance, lrs=[]))[1] == "the advisor knows no positive LR of the run yet"


def test_many_groups_are_summarized() -> None:
    before = tuple(0.1 / 2 ** i for i in range(6))
    after = tuple(v * 0.1 for v in before)
    assert describe_change(before, after) == "x0.1 in all 6 groups: 6 groups 0.00313..0.1 -> 6 groups 0.000313..0.01"
    assert describe_change((0.1, 0.1, 0.1), (0.01, 0.01, 0.01)) == "0.1 (all 3 groups) -> 0.01 (all 3 groups)"


def test_markers_at_80_columns() -> None:
    x = np.arange(100.0)
    flat = ChartSpec("learning rate", [Series(Curve(x, np.full(100, 0.1)), "green")], (0.0, 99.0),
                     markers=[50.0], marker_label="start averaging @ 50")
    lines = render_chart(flat, 50, 5).plain.split("\n")
    assert "┊ start averaging @ 50" in lines[0]
    column = GUTTER + int(50 / 99 * 2 * (50 - GUTTER)) // 2
    assert [line[column] for line in lines[1:]].count(MARKER) == 3  # every row but the curve's
    assert sum(line.count(MARKER) for line in lines[1:]) == 3
    outside = ChartSpec("learning rate", flat.series, (0.0, 40.0), markers=[50.0], marker_label="x")
    assert MARKER not in render_chart(outside, 50, 5).plain  # past the range shown (a replay's position)


def test_the_panels_line_for_each_answer() -> None:
    from pathlib import Path

    from lrtui.app.apply_key import command_note
    from lrtui.app.messages import CommandAnswered
    from lrtui.control import Outcome

    what = "drop_lr: lr 0.1 -> 0.01"
    queued = Path("run/control/commands/abc.json")
    applied = Outcome("applied", {"action": "drop_lr", "step": 300, "lr_before": [0.1], "lr_after": [0.01]})
    refused = Outcome("refused", {"message": "param group 0 is at lr 0: cannot drop it"})
    notes = [command_note(CommandAnswered("k", "abc", what, o, queued), 30.0).text
             for o in (applied, refused, Outcome("ended"), Outcome("waiting"))]
    assert notes == ["✓ drop_lr applied at step 300: lr 0.1 -> 0.01",
                     "✗ drop_lr refused by the run: param group 0 is at lr 0: cannot drop it",
                     "✗ the run ended before it took the command; the command was withdrawn",
                     f"… drop_lr not confirmed in 30 s: still queued (remove {queued} to cancel)"]
    assert command_note(CommandAnswered("k", "abc", what, None, None, error="no command directory"), 30).text == \
        "not sent: no command directory"
