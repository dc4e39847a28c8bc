"""The real app, headless, on runs as users have them: missing values, unconverged estimates,
hostile field types, sweeps that grow while watched, and nothing to show yet."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app_support import T0, headless, run_events, screen_text, sgd_meta, wait_for, write_run
from lrtui.app import LrtuiApp
from lrtui.app.chart import Series
from lrtui.app.chart_specs import chart_specs
from lrtui.app.live import LiveSource
from lrtui.app.recorded import load_into
from lrtui.app.runview import RunView
from lrtui.app.widgets import AdvisorScreen, RunsScreen
from lrtui.runlog import RunWriter

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from runfuzz import values  # noqa: E402

FROZEN = lambda: T0 + 100.0  # noqa: E731


def _replay(path: Path, **kwargs: Any) -> LrtuiApp:
    return LrtuiApp(path, "replay", clock=FROZEN, autoplay=False, system_interval=0, refresh=0.05, **kwargs)


def _write(run_dir: Path, events: list[dict[str, Any]], lr: float = 0.05, finished: bool = True) -> Path:
    writer = RunWriter(run_dir, sgd_meta(run_dir.name, lr))
    for event in events:
        writer.write_event(event)
    writer.close() if finished else writer.flush()
    return run_dir


def _gappy_run(run_dir: Path) -> Path:
    """Loss logged every 4th step only (null or absent otherwise), NaN at steps 60 and 61,
    grad norm on every step; hessian estimates that did not converge at steps 10 and 30."""
    events = []
    for step in range(100):
        event: dict[str, Any] = {"kind": "step", "step": step, "time": T0 + step, "grad_norm": 1.0, "lr": [0.05]}
        if step in (60, 61):
            event["loss"] = float("nan")
        elif step % 4 == 0:
            event["loss"] = 1.0 / (step + 1)
        elif step % 8 == 1:
            event["loss"] = None
        events.append(event)
        if step % 10 == 0:
            events.append({"kind": "sharpness", "step": step, "time": T0 + step, "method": "hessian",
                           "value": 1000.0 if step in (10, 30) else 30.0 + step / 10, "converged": step not in (10, 30)})
            events.append({"kind": "sharpness", "step": step, "time": T0 + step, "method": "batch",
                           "value": 20.0, "converged": True})
    return _write(run_dir, events)


def _check_gappy(view: RunView) -> None:
    curves = view.curves(1)
    assert curves is not None
    # missing losses are no points; the two NaNs are points, to be marked
    assert curves.loss.x.tolist() == sorted({float(s) for s in range(0, 100, 4)} | {60.0, 61.0})
    assert np.isnan(curves.loss.y).sum() == 2
    assert len(curves.grad_norm) == 100
    # the unconverged estimates (1000 at steps 10 and 30) are not drawn; batch estimates are exact
    assert curves.sharpness["hessian"].x.tolist() == [0.0, 20.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    assert len(curves.sharpness["batch"]) == 10


def test_missing_is_not_non_finite_replayed_and_followed(tmp_path: Path) -> None:
    """The same run read the replay's way (blocks of lines) and the watch's way (the follower's
    events): a missing loss is not drawn, a NaN loss is, and an unconverged estimate is not."""
    run_dir = _gappy_run(tmp_path / "gappy")
    replayed = RunView(run_dir)
    load_into(replayed, lambda: None)
    _check_gappy(replayed)
    followed = RunView(run_dir)
    source = LiveSource(followed, lambda message: None, use_inotify=False)
    from lrtui.runlog import RunFollower

    with RunFollower(run_dir, use_inotify=False) as follower:
        batch = follower.read_new()
        source.apply(batch.events, batch.meta, batch.reset, batch.skipped)
    _check_gappy(followed)
    # the chart marks the NaN columns only
    curves = replayed.curves(1)
    spec = chart_specs(curves, (0.0, 99.0), log=False, smoothing=1)[0]
    raw: Series = spec.series[0]
    cols = raw.curve.columns(0.0, 99.0, 100)
    assert np.flatnonzero(cols.non_finite).tolist() == [60, 61]


@headless
async def test_the_screen_marks_only_what_was_written_as_nan(tmp_path: Path) -> None:
    app = _replay(_gappy_run(tmp_path / "gappy"), start_at_end=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.view is not None and app.view.state is not None
                       and app.view.state.step == 99, what="the replay at its end")
        app.redraw()
        await pilot.pause()
        plot = screen_text(app).splitlines()[2][8:]
        marked = [i for i, ch in enumerate(plot) if ch == "x"]
        assert marked and marked == list(range(marked[0], marked[0] + len(marked))) and len(marked) <= 2
        assert 0.55 < marked[0] / plot.index("▏") < 0.65  # steps 60 and 61 of 0-99, nowhere else
        assert "sharpness" in screen_text(app) and "1,000" not in screen_text(app)  # no unconverged 1000


def _events_of_every_kind() -> list[dict[str, Any]]:
    events = run_events(60, 0.05, sharpness_every=5, system_every=10)
    events.append({"kind": "metric", "step": 59, "time": T0 + 59.5, "phase": "pretrain", "test_acc": 0.8})
    events.append({"kind": "warning", "step": 30, "time": T0 + 30.5, "source": "gpu", "message": "lost"})
    return events


async def _drive(path: Path, mode: str) -> str:
    app = LrtuiApp(path, mode, clock=FROZEN, autoplay=False, system_interval=0, refresh=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view is not None and app.view.loaded, what="the run read")
        await pilot.pause(0.2)
        for key in ("end", "left", "l", "s", "a", "escape", "o", "home"):
            await pilot.press(key)
        await pilot.pause(0.1)
        text = screen_text(app)
        await pilot.press("q")
    return text


def test_a_system_event_with_text_for_a_number(tmp_path: Path) -> None:
    """The reported case: ``"rss": "big"`` took the replay and watch screens down."""
    events = _events_of_every_kind()
    for event in events:
        if event["kind"] == "system":
            event["rss"] = "big"
            event["cpu_percent"] = [1, 2]
            event["gpu_util"] = "hot"
    run_dir = _write(tmp_path / "big", events)
    for mode in ("replay", "watch"):
        text = asyncio.run(_drive(run_dir, mode))
        assert "GPU0 H100 80GB HBM3 -%" in text, text  # the text where a number belongs: unknown


#: Each example starts the real app (a few seconds on a slow core): a few by default.
HOSTILE = settings(max_examples=3, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck))


@HOSTILE
@given(data=st.data())
def test_any_type_in_any_field_of_any_event(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Every panel survives wrong types: each event of a plausible run gets a few of its fields
    (kind, step and time aside, which the reader checks) replaced by any JSON value."""
    events = _events_of_every_kind()
    for event in events:
        names = [n for n in event if n not in ("kind", "step", "time")]
        for name in data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
            event[name] = data.draw(values)
    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "meta.json").write_text(json.dumps(sgd_meta("hostile", 0.05) | {"schema": "1.0"}))
    from runfuzz import to_json_text

    (run_dir / "events.jsonl").write_text("".join(json.dumps(to_json_text(e)) + "\n" for e in events))
    lines = asyncio.run(_drive(run_dir, data.draw(st.sampled_from(["replay", "watch"])))).splitlines()
    assert len(lines) == 24 and "quit" in lines[-1]


@headless
async def test_first_screen_is_the_frame_before_any_run(tmp_path: Path) -> None:
    """`lrtui demo` opens the screen while the training still starts: the frame shows at once."""
    app = LrtuiApp(tmp_path / "not-yet", "watch", clock=FROZEN, system_interval=0, refresh=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        text = screen_text(app)
        for title in ("loss", "gradient norm", "sharpness", "learning rate", "Advisor", "quit"):
            assert title in text
        assert text.count("waiting for the run to start") == 4 and "waiting" in text.splitlines()[0]


def _live_run(run_dir: Path, lr: float, steps: int = 40) -> RunWriter:
    """A run being written now (no end record, fresh times); its writer stays open."""
    writer = RunWriter(run_dir, sgd_meta(run_dir.name, lr) | {"started_at": time.time()}, flush_interval=0.05)
    for step in range(steps):
        writer.write("step", step, loss=1.0 / (step + 1), grad_norm=1.0, lr=[lr])
    writer.flush()
    return writer


@headless
async def test_watching_a_sweep_keeps_the_run_shown_and_opens_on_the_live_one(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # names out of LR order: the list goes by LR
    write_run(sweep / "z-small", 50, 0.01)
    write_run(sweep / "a-large", 50, 0.2)
    live = _live_run(sweep / "m-middle", 0.05)
    try:
        app = LrtuiApp(sweep, "watch", system_interval=0, refresh=0.05)  # the real clock: it is live now
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: all(v.meta is not None for v in app.views), what="every run read")
            assert [v.initial_lr() for v in app.views] == [0.01, 0.05, 0.2]
            await wait_for(pilot, lambda: app.view.name == "m-middle", what="the live run shown")
            await pilot.press("right_square_bracket")  # the user picks the lr 0.2 run
            assert app.view.name == "a-large"
            write_run(sweep / "b-new", 50, 0.1)  # a new run, before it in LR order
            await wait_for(pilot, lambda: len(app.views) == 4 and app.views[2].meta is not None,
                           what="the new run found")
            await pilot.pause(0.3)
            assert [v.name for v in app.views] == ["z-small", "m-middle", "b-new", "a-large"]
            assert app.view.name == "a-large" and "run 4/4" in screen_text(app).splitlines()[0]
    finally:
        live.close()


@headless
async def test_the_runs_list_follows_the_runs_while_open(tmp_path: Path) -> None:
    """While the table is open the runs go on (a replay's advisors catch up with a new position,
    a watched run grows): its cells and the sweep's verdict follow, without closing it."""
    for i, lr in enumerate((0.01, 0.02, 0.04)):
        write_run(tmp_path / "sweep" / f"run-{i}", 600, lr, seed=i)
    app = _replay(tmp_path / "sweep", start_at_end=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: [getattr(v.state, "step", None) for v in app.views] == [599] * 3,
                       what="every run's advisor at the end")
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunsScreen) and [cells[2] for _, cells in screen.rows] == ["599"] * 3
        app.set_position(300)  # the position moves while the table is open
        await wait_for(pilot, lambda: [cells[2] for _, cells in screen.rows] == ["300"] * 3,
                       what="the open table at the new position")
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app).splitlines() if "run-0" in line)
        assert app.screen is screen and "300" in row and "599" not in row
        await pilot.press("escape", "a")  # all of the advice follows the advisor the same way
        assert isinstance(app.screen, AdvisorScreen) and "At step 300" in screen_text(app)
        app.set_position(450)
        await wait_for(pilot, lambda: "At step 450" in screen_text(app), what="the open advice at step 450")
