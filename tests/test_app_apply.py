"""The app's apply key, headless through App.run_test: on a live training process with
control=True it follows the advisor's recommendation after a confirmation; in a replay and on a
run without control it says in one line why it does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from rich.style import Style
from rich.text import Text

from app_support import headless, screen_text, wait_for, write_run
from control_process import finish, start_training
from lrtui.app import LrtuiApp
from lrtui.app.apply_key import APPLY_KEY, IN_REPLAY
from lrtui.app.chart import GUTTER, MARKER, MARKER_STYLE
from lrtui.app.curves import column_index
from lrtui.app.widgets import Chart, ConfirmActionScreen
from lrtui.control import NO_CONTROL
from lrtui.runlog import load_run

FROZEN = lambda: 1_795_840_100.0  # noqa: E731
#: The job stops before this step and waits for a command: by then (batch 64, lr 0.1) the
#: advisor recommends drop_lr and start_averaging (made at step 179: tests/control/controlled_training.py).
AT = 300


def marker_column(chart: Chart, step: float) -> int:
    """The text column of ``step`` on the chart's plot."""
    assert chart.spec is not None
    at = column_index(np.array([step]), *chart.spec.x_range, 2 * (chart.size.width - GUTTER))[0]
    return GUTTER + int(at) // 2


def marked_columns(lines: list[Text], console: Console) -> set[int]:
    """Text columns of the plot drawn in the marker's style (on any row)."""
    style = Style.parse(MARKER_STYLE)
    return {i for line in lines for i in range(GUTTER, len(line.plain))
            if line.get_style_at_offset(console, i) == style}


def footer_has_apply(app: LrtuiApp) -> bool:
    """The key in the footer (the screen's last row), enabled."""
    enabled = any(b.binding.action == "apply_advice" and b.enabled for b in app.active_bindings.values())
    return enabled and "apply advice" in screen_text(app).split("\n")[-1]


@headless
async def test_the_key_drops_the_lr_of_a_live_run(tmp_path: Path) -> None:
    work = tmp_path / "job"
    proc = start_training(work, "--control", "--steps", str(AT + 30), "--wait-at", str(AT), "--batch", "64")
    app = LrtuiApp(work / "run", "watch", system_interval=0, refresh=0.05)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.monitor
            await wait_for(pilot, lambda: screen.why_not_apply() is None, 120,
                           what="the advisor's drop_lr in force on the live run")
            await pilot.pause(0.2)
            assert footer_has_apply(app), screen_text(app)
            await pilot.press(APPLY_KEY)
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="the confirmation")
            text = screen_text(app)
            assert "Apply to the running job run?" in text
            assert "drop_lr: lr 0.1 -> 0.01" in text  # old and new LR (one group)
            assert "start_averaging" in text  # the other recommendation in force, key 2
            await pilot.press("y")
            view = app.view
            assert view is not None
            await wait_for(pilot, lambda: view.key in screen.command_notes
                           and "applied" in screen.command_notes[view.key].text, 120, what="the run's answer")
            assert screen.command_notes[view.key].text == "✓ drop_lr applied at step 300: lr 0.1 -> 0.01"
            err = finish(proc)
            await wait_for(pilot, lambda: view.state is not None and view.state.step == AT + 29, 60,
                           what="the last steps read")
            await pilot.pause(0.3)
            assert "✓ drop_lr applied at step" in screen_text(app)  # on the advisor panel
            lr_chart = app.screen.query_one("#lr-chart", Chart)
            lines = lr_chart.render().split("\n")
            assert f"{MARKER} drop lr @ 300" in lines[0].plain  # the legend
            assert marked_columns(lines[1:], app.console) == {marker_column(lr_chart, AT)}
            assert f"{MARKER} drop lr @ 300 (app)" in screen_text(app)
            assert not footer_has_apply(app)  # the run has finished: the key cannot act
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "step 300: drop_lr (app)" in err
    final = json.loads((work / "final.json").read_text())
    assert final["step_lrs"][AT - 1] == [pytest.approx(0.1)] and final["step_lrs"][AT] == [pytest.approx(0.01)]
    run = load_run(work / "run")
    (action,) = run.records("action")
    assert action["source"] == "app" and action["step"] == AT and action["action"] == "drop_lr"
    assert action["lr_before"] == [pytest.approx(0.1)] and action["lr_after"] == [pytest.approx(0.01)]
    steps = run.table("step")
    lr = steps["lr"].reshape(steps["step"].size, -1)[:, 0]
    assert lr[steps["step"] == AT - 1][0] == pytest.approx(0.1)
    assert lr[steps["step"] >= AT] == pytest.approx(0.01)


@pytest.mark.parametrize("mode", ["replay", "watch"])
@headless
async def test_the_key_says_why_it_does_nothing(tmp_path: Path, mode: str) -> None:
    run = write_run(tmp_path / "run", 300, 0.05, finished=False)  # no control=True in its probe metadata
    app = LrtuiApp(run, mode, clock=FROZEN, autoplay=False, start_at_end=True, system_interval=0, refresh=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view is not None and app.view.state is not None, what="advised")
        assert not footer_has_apply(app)
        await pilot.press(APPLY_KEY)
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmActionScreen)
        why = IN_REPLAY if mode == "replay" else NO_CONTROL
        assert app.monitor.command_notes[str(run)].text == f"{APPLY_KEY}: {why}"
        assert "\n" not in why
        assert any(n.message == why for n in app._notifications)  # noqa: SLF001 - the toast (not rendered headless)
        assert f"{APPLY_KEY}: " in screen_text(app)  # the panel's line, as far as it fits
    assert not (run / "control").exists()
