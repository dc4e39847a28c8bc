"""The real app, headless (App.run_test and Pilot): live following, replay, runs, alerts, system panel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from app_support import headless, screen_text, sgd_meta, wait_for, write_run
from lrtui.app import LrtuiApp
from lrtui.app.widgets import HelpScreen, RunsScreen
from lrtui.runlog import RunWriter
from lrtui.system import SystemSampler
from test_system import A10, H100, make_fake_nvml

#: A clock fixed after the recorded runs end, so nothing on screen depends on when tests run.
FROZEN = lambda: 1_795_840_100.0  # noqa: E731

WRITER = textwrap.dedent("""
    import os, socket, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from app_support import run_events, sgd_meta
    from lrtui.runlog import RunWriter
    run_dir, flag = Path(sys.argv[1]), Path(sys.argv[2])
    time.sleep(0.5)  # the app is already watching a directory that does not exist yet
    meta = sgd_meta(run_dir.name, 0.05) | {"started_at": time.time(), "pid": os.getpid(),
                                           "host": socket.gethostname()}
    writer = RunWriter(run_dir, meta, flush_interval=0.05)
    for e in run_events(400, 0.05):
        if e["kind"] == "step" and e["step"] == 200:
            writer.flush()
            while not flag.exists():  # hold here until the test has seen the first half
                time.sleep(0.02)
        e["time"] = time.time()
        writer.write_event(e)
        if e["kind"] == "step":
            time.sleep(0.001)
    writer.close()
""")


def _replay(path: Path, **kwargs: object) -> LrtuiApp:
    kwargs = {"clock": FROZEN, "autoplay": False, "system_interval": 0, "refresh": 0.05, **kwargs}
    return LrtuiApp(path, "replay", **kwargs)  # type: ignore[arg-type]


async def _loaded(pilot, app: LrtuiApp) -> None:
    await wait_for(pilot, lambda: app.position is not None and app.view is not None
                   and app.view.state is not None and app.view.state.step == int(app.position),
                   what="the replay to load and the advisor to reach the position")
    app.redraw()
    await pilot.pause()


@headless
async def test_follows_a_run_that_another_process_is_writing(tmp_path: Path) -> None:
    run_dir = tmp_path / "live-run"
    flag = tmp_path / "go-on"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(flag),
                               str(Path(__file__).parent)])
    try:
        app = LrtuiApp(run_dir, "watch", refresh=0.1, system_interval=0, poll=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.2)
            assert "waiting" in screen_text(app).splitlines()[0]
            await wait_for(pilot, lambda: app.view.data.last_step == 199, 30, "the first 200 steps")
            await pilot.pause(0.3)
            first = screen_text(app)
            assert first.splitlines()[0].split()[:2] == ["live-run", "live"]
            assert "step 199" in first and "last event" in first
            assert "Advisor" in first and "regime" in first
            flag.touch()
            await wait_for(pilot, lambda: app.view.end is not None, 30, "the end record")
            await pilot.pause(0.3)
            last = screen_text(app)
            assert last.splitlines()[0].split()[:2] == ["live-run", "finished"]
            assert "step 399" in last
            # the step axis followed the run, and the advisor saw every step
            assert last.splitlines()[-2].split("▏")[0].rstrip().endswith("399")
            assert app.view.state.step == 399
    finally:
        flag.touch()
        writer.wait(timeout=30)
    assert writer.returncode == 0


@headless
async def test_replay_controls(tmp_path: Path) -> None:
    write_run(tmp_path / "run-a", 400, 0.05)
    app = _replay(tmp_path / "run-a")
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot, app)
        assert app.position == 0 and not app.monitor.playing
        await pilot.press("right", "right")
        assert app.position == 2
        await pilot.press("left")
        assert app.position == 1
        await pilot.press("end")
        assert app.position == 399
        await pilot.press("home")
        assert app.position == 0
        await pilot.press("pagedown")
        assert app.position == 20
        await _loaded(pilot, app)  # the advisor is at the replay position, not at the end
        assert app.view.state.step == 20
        text = screen_text(app)
        assert "paused" in text and "step 20 / 399" in text and "Advisor  at step 20" in text
        await pilot.press("plus")
        assert app.monitor.speed == 2
        await pilot.press("minus", "minus")
        assert app.monitor.speed == 0.5
        await pilot.press("plus", "plus", "plus")  # x4: about 7 logged steps per refresh
        await pilot.press("space")
        assert app.monitor.playing
        await wait_for(pilot, lambda: app.position >= 60, 30, "the replay to play")
        await pilot.press("space")
        stopped = app.position
        await pilot.pause(0.3)
        assert not app.monitor.playing and app.position == stopped
        await _loaded(pilot, app)
        assert app.view.state.step == stopped
        # at the end it stops; space then plays again from the start
        await pilot.press("end")
        assert app.position == 399 and not app.monitor.playing
        await pilot.press("space")
        assert app.monitor.playing and app.position < 399


@headless
async def test_end_pressed_before_the_run_is_read_goes_to_its_end(tmp_path: Path, monkeypatch) -> None:
    """] then End as the replay opens, before the second run has been read (a slow machine over
    SSH): the replay follows that run to its end as it comes in, paused there, not playing on
    from the first run's position."""
    import threading

    from lrtui.app import replay

    write_run(tmp_path / "sweep" / "lr-0.05", 300, 0.05)
    write_run(tmp_path / "sweep" / "lr-0.2", 300, 0.2, diverge_at=200, seed=1)
    go_on, real_load = threading.Event(), replay.load_into

    def held_load(view, on_chunk, **kwargs):  # the real loader; the second run waits for the test
        if view.name == "lr-0.2":
            go_on.wait(30)
        real_load(view, on_chunk, chunk_bytes=4096, **kwargs)  # many chunks: the end comes late

    monkeypatch.setattr(replay, "load_into", held_load)
    app = _replay(tmp_path / "sweep", autoplay=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.position is not None, what="the first run's start")
        await pilot.press("right_square_bracket", "end")
        assert app.view.name == "lr-0.2" and not app.view.complete and not app.monitor.playing
        go_on.set()
        await wait_for(pilot, lambda: app.view.complete, what="the second run read")
        await pilot.pause(0.2)
        assert app.position == 299 and not app.monitor.playing
        await _loaded(pilot, app)
        assert "DIVERGED at step 200" in screen_text(app)
        # and a move after End is the user's: it is not undone by the rest of a run coming in
        await pilot.press("home")
        assert app.position == 0


@headless
async def test_divergence_alert_appears_at_its_step(tmp_path: Path) -> None:
    write_run(tmp_path / "diverges", 400, 0.2, diverge_at=250, seed=1)
    app = _replay(tmp_path / "diverges")
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(pilot, app)
        app.set_position(249)
        await _loaded(pilot, app)
        before = screen_text(app)
        assert "DIVERGED" not in before and app.view.state.diverged_at_step is None
        await pilot.press("right")
        await _loaded(pilot, app)
        after = screen_text(app)
        assert app.position == 250
        assert "DIVERGED at step 250" in after
        assert app.view.state.regime == "diverged"
        # the NaN steps are marked on the loss chart
        assert "x" in after.splitlines()[2]
        # back before the divergence, the alert is gone again (the state is the state then)
        await pilot.press("left")
        await _loaded(pilot, app)
        assert "DIVERGED" not in screen_text(app)


def write_sweep_run(run_dir: Path, lr: float, converges: bool, test_acc: float | None, steps: int = 600,
                    finetune: int = 0) -> None:
    """A sweep's run: below the threshold the loss falls to 1e-4, above it it settles at 0.3;
    then ``finetune`` steps at lr/10 that fall from there to 1e-4. Without ``test_acc``: a run
    still going (no fine-tuning result, no end record)."""
    rng = np.random.default_rng(int(lr * 1000))
    t = np.arange(steps)
    loss = np.exp(-t / 60) + 1e-4 if converges else 0.3 + 0.7 * np.exp(-t / 60) + 0.03 * rng.standard_normal(steps)
    w = RunWriter(run_dir, sgd_meta(run_dir.name, lr))
    for i in range(steps):
        w.write("step", i, loss=float(loss[i]), grad_norm=1.0, lr=[lr])
    for i in range(finetune):
        w.write("step", steps + i, loss=float(loss[-1] * np.exp(-i / 30) + 1e-4), grad_norm=1.0, lr=[lr / 10])
    steps += finetune
    if test_acc is None:
        w.flush()  # its writer thread is a daemon: the run stays without its end record
        return
    w.write("metric", steps - 1, phase="finetune", test_acc=test_acc)
    w.close()


@headless
async def test_runs_list_shows_the_sweeps_verdict_at_the_replay_position(tmp_path: Path) -> None:
    """Paused at the end, every run's advisor is at the position (each is fed once it has been
    read, whether or not it was shown) and the runs list heads with the sweep's threshold, band
    and winner, the same as ``lrtui advise``; at an early position, nothing the replay has not
    reached."""
    sweep = tmp_path / "sweep"
    for lr, conv, acc in ((0.01, True, 0.80), (0.02, True, 0.84), (0.04, False, 0.88)):
        write_sweep_run(sweep / f"lr{lr:g}", lr, conv, acc)
    write_sweep_run(sweep / "lr0.08", 0.08, False, 0.70, finetune=600)  # fine-tuned at 0.008 after its equilibrium
    app = _replay(sweep, start_at_end=True)
    async with app.run_test(size=(160, 40)) as pilot:
        await _loaded(pilot, app)
        # paused at lr0.01's end, nothing seeks again: every run is still fed once it is read
        await wait_for(pilot, lambda: [getattr(v.state, "step", None) for v in app.views] == [599] * 4,
                       what="every run's advisor at the position, unshown runs too")
        await pilot.press("left_square_bracket", "end")  # to lr0.08 (the last run), and to its end
        await wait_for(pilot, lambda: [getattr(v.state, "step", None) for v in app.views] == [599, 599, 599, 1199],
                       what="every run's advisor at the end")
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        # regime now, and at the first LR: lr0.08 is fine-tuning now; a sweep judges its first LR
        assert [cells[3] for _, cells in app.screen.rows] == ["converging", "converging", "equilibrium", "converging"]
        assert [cells[4] for _, cells in app.screen.rows] == ["converging", "converging", "equilibrium", "equilibrium"]
        summary = app.screen.summary
        assert summary.startswith("sweep: convergence threshold ≈ 0.0283 (between 0.02 and 0.04)")
        assert "best after finetune: lr 0.04 (lr0.04), test_acc 0.8800" in summary
        assert summary[:60] in screen_text(app)  # on the screen, above the table
        await pilot.press("escape")
        app.set_position(30)  # too early for any verdict: the threshold is not known yet
        await wait_for(pilot, lambda: all(v.state is not None and v.state.step == 30 for v in app.views),
                       what="every run's advisor at step 30")
        await pilot.press("r")
        assert app.screen.summary == "sweep: convergence threshold not known yet"
        assert app.screen.summary in screen_text(app)


@headless
async def test_watching_a_sweep_a_run_still_falling_bounds_the_threshold_neither_way(tmp_path: Path) -> None:
    """Watching: lr 0.04 is still running and still falling at step 99, so it may converge yet;
    the verdict puts the threshold between the ended runs 0.02 (converged) and 0.08 (equilibrium)."""
    sweep = tmp_path / "sweep"
    for lr, conv, acc in ((0.01, True, 0.80), (0.02, True, 0.84), (0.08, False, 0.70)):
        write_sweep_run(sweep / f"lr{lr:g}", lr, conv, acc)
    write_sweep_run(sweep / "lr0.04", 0.04, False, None, steps=100)
    app = LrtuiApp(sweep, "watch", refresh=0.1, system_interval=0, clock=FROZEN)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: [getattr(v.state, "step", None) for v in app.views] == [599, 599, 99, 599],
                       what="every run read")
        assert app.views[2].status(FROZEN()) == "running" and app.views[2].state.regime == "converging"
        await pilot.press("r")
        assert app.screen.summary.startswith("sweep: convergence threshold ≈ 0.04 (between 0.02 and 0.08)")


@headless
async def test_switching_runs_and_overlaying_a_sweep(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "lr-0.05", 300, 0.05)
    write_run(tmp_path / "sweep" / "lr-0.2", 300, 0.2, diverge_at=200, seed=1)
    app = _replay(tmp_path / "sweep", start_at_end=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await _loaded(pilot, app)
        assert screen_text(app).split()[0] == "lr-0.05"
        await pilot.press("right_square_bracket")
        await _loaded(pilot, app)
        text = screen_text(app)
        assert text.split()[0] == "lr-0.2" and "run 2/2" in text and "DIVERGED at step 200" in text
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        rows = app.screen.rows
        assert [r[1][:2] for r in rows] == [("lr-0.05", "0.05"), ("lr-0.2", "0.2")]
        assert rows[1][1][3] == "diverged"
        await pilot.press("up", "enter")
        assert not isinstance(app.screen, RunsScreen)
        assert app.view.name == "lr-0.05"
        await pilot.press("o")
        text = screen_text(app)
        assert "loss, sweep by LR" in text and "━ 0.05" in text and "━ 0.2" in text


@headless
async def test_runs_that_appear_later_show_up(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "a", 50, 0.05)
    app = LrtuiApp(tmp_path / "sweep", "watch", refresh=0.1, system_interval=0, clock=FROZEN)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.view.data.last_step == 49, 30, "run a")
        assert "runs" not in screen_text(app).splitlines()[-1]  # one run: the footer offers no run keys
        write_run(tmp_path / "sweep" / "b", 80, 0.1)
        await wait_for(pilot, lambda: len(app.views) == 2, 30, "run b to be found")
        await wait_for(pilot, lambda: "r runs" in screen_text(app).splitlines()[-1], 30, "the run keys offered")
        await wait_for(pilot, lambda: app.views[1].data.last_step == 79, 30, "run b to be read")
        await pilot.press("right_square_bracket")
        await pilot.pause(0.2)
        assert screen_text(app).split()[:2] == ["b", "finished"]


@headless
async def test_system_panel_without_nvml(tmp_path: Path) -> None:
    write_run(tmp_path / "run", 60, 0.05)
    with SystemSampler() as real:
        reason = real.nvml_error
    app = _replay(tmp_path / "run", system_interval=0.1, start_at_end=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(pilot, app)
        await wait_for(pilot, lambda: app.monitor.system[1] is not None, 30, "a system sample")
        app.redraw()
        await pilot.pause()
        text = screen_text(app)
        if reason is not None:  # this machine: no NVML library; one line says so
            assert "no local GPU: NVML not" in text
        assert "CPU " in text and "RAM " in text
        # what the probe logged inside the job is still shown
        assert "in the job @ step 50" in text and "GPU0 H100 80GB HBM3 91%" in text


@headless
async def test_gpu_panel_from_a_fake_nvml(tmp_path: Path) -> None:
    write_run(tmp_path / "run", 60, 0.05, system_every=0)
    app = _replay(tmp_path / "run", system_interval=0.1,
                  sampler_factory=lambda: SystemSampler(nvml=make_fake_nvml([H100, A10])))
    async with app.run_test(size=(120, 36)) as pilot:
        await _loaded(pilot, app)
        await wait_for(pilot, lambda: app.monitor.system[0], 30, "a GPU sample")
        app.redraw()
        await pilot.pause()
        text = screen_text(app)
        assert "GPU0 H100 80GB HBM3 87% 57.0G/79.6G 64°C 512W" in text
        assert "GPU1 A10 3% 1000M/22.5G 38°C\n" in text.replace(" ", " ").replace("  \n", "\n") or \
            "GPU1 A10 3% 1000M/22.5G 38°C " in text  # no power sensor: no watts, no crash
        assert "in the job" not in text  # this run logged no system events


@headless
async def test_help_screen_and_quit(tmp_path: Path) -> None:
    write_run(tmp_path / "run", 60, 0.05)
    app = _replay(tmp_path / "run")
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(pilot, app)
        footer = screen_text(app).splitlines()[-1]
        assert "q quit" in footer and "? help" in footer
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "play / pause" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("l")
        assert "loss (log)" in screen_text(app)
        await pilot.press("s")
        assert "mean of last 200 steps" in screen_text(app)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


@pytest.mark.parametrize("argv,message", [
    (["replay", "{tmp}/nowhere"], "no such directory"),
    (["replay", "{tmp}"], "no run here"),
    (["watch", "{tmp}/file"], "not a run directory"),
])
def test_bad_paths_give_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "file").write_text("x")
    start = time.monotonic()
    done = subprocess.run(["lrtui", *[a.format(tmp=tmp_path) for a in argv]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - start < 30


def test_reading_yields_to_the_screen_only_at_the_live_edge() -> None:
    """A heavy batch of fresh events makes the reading thread pause (keys stay prompt under a
    flood); a backlog of old events, or events without a usable time, is read at full speed."""
    from lrtui.app.live import LIVE_EDGE_SECONDS, at_live_edge

    now = time.time()
    assert at_live_edge({"kind": "step", "step": 1, "time": now - 1.0})
    assert not at_live_edge({"kind": "step", "step": 1, "time": now - 2 * LIVE_EDGE_SECONDS})
    for bad in ("soon", None, float("nan"), True):
        assert not at_live_edge({"kind": "step", "step": 1, "time": bad})


@headless
async def test_the_runs_table_lists_scheduled_runs_by_the_lr_they_rise_to(tmp_path: Path) -> None:
    """Runs recorded by the probe under schedules that start low (OneCycleLR from max_lr/25, a
    warm-up from 0 as the Hugging Face default): the table's LR is the schedule's peak."""
    import torch

    from probes import Probe

    schedules = {
        "onecycle": (0.4, lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.4, total_steps=40)),
        "warmup-from-0": (0.2, lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, s / 10))),
        "constant": (0.05, lambda o: None),
    }
    for name, (lr, make) in schedules.items():
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        scheduler = make(opt)
        with Probe(model, opt, tmp_path / "sweep" / name, system_stats=False) as probe:
            for _ in range(20):
                loss = model(torch.randn(8, 4)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                probe.step(loss)
                if scheduler is not None:
                    scheduler.step()
    app = _replay(tmp_path / "sweep")
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: all(v.complete and v.state is not None for v in app.views),
                       what="every run read and advised")
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        lrs = {cells[0]: cells[1] for _, cells in app.screen.rows}
        assert lrs == {"constant": "0.05", "warmup-from-0": "0.2", "onecycle": "0.4"}, lrs
