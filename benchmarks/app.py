"""Benchmark of the terminal app: first screen of a 10^6-step replay, CPU while following, redraw time.

Run: ``python benchmarks/app.py`` (add ``--steps 100000`` for a quick look). Prints a table.
Targets (issue 5): first screen <= 2 s; following 1000 events/s <= 15% of one core; redrawing
all charts at 160x48 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from lrtui.app import LrtuiApp
from lrtui.app.widgets import Chart
from lrtui.runlog import RunWriter

T0 = 1_795_840_000.0


def write_long_run(run_dir: Path, steps: int) -> None:
    """A recorded SGD run of ``steps`` logged steps, sharpness every 10, a spike and a NaN."""
    rng = np.random.default_rng(0)
    loss = 0.1 + 0.6 * np.exp(-np.arange(steps) / (steps / 5)) + 0.02 * rng.standard_normal(steps)
    loss[steps // 3] = 50.0
    loss[2 * steps // 3] = np.nan
    grad = 1.0 + 0.1 * rng.standard_normal(steps)
    meta = {"name": run_dir.name, "started_at": T0, "host": "elsewhere", "pid": 0,
            "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.05, "momentum": 0.0, "params": 10}]}}
    writer = RunWriter(run_dir, meta, max_pending=1 << 22)
    for i in range(steps):
        t = T0 + i * 0.01
        writer.write_event({"kind": "step", "step": i, "time": t, "loss": float(loss[i]),
                            "grad_norm": float(grad[i]), "update_norm": 0.05, "weight_norm": 1.0,
                            "lr": [0.05], "effective_lr": [None]})
        if i % 10 == 0:
            writer.write_event({"kind": "sharpness", "step": i, "time": t, "method": "hessian",
                                "value": 40.0 * min(1.0, 0.2 + i / (steps * 0.6)), "hvps": 6,
                                "seconds": 0.004, "tolerance": 1e-3, "converged": True, "warm_start": True})
    writer.close()


async def first_screen(run_dir: Path) -> dict[str, float]:
    """Seconds from starting the app to a drawn first screen, then to the advisor at the end."""
    start = time.perf_counter()
    app = LrtuiApp(run_dir, "replay", autoplay=False, system_interval=0)
    async with app.run_test(size=(160, 48)) as pilot:
        chart = app.screen.query_one("#loss-chart", Chart)
        while not (chart.spec is not None and app.view.state is not None):
            await asyncio.sleep(0.005)
        while chart._strips is None:  # the chart has been rendered into the frame
            await asyncio.sleep(0.005)
        shown = time.perf_counter() - start
        jump = time.perf_counter()
        await pilot.press("end")
        while not (app.view.state is not None and app.view.state.step == int(app.position)):
            await pilot.pause(0.01)
        app.redraw()
        await pilot.pause()
        advisor_at_end = time.perf_counter() - jump
    return {"first": shown, "end": advisor_at_end}


async def bare_textual_start() -> float:
    """Seconds for an App with one Static to show its first frame: the floor under ``first``."""
    from textual.app import App
    from textual.widgets import Static

    class Bare(App[None]):
        def compose(self):  # type: ignore[no-untyped-def]
            yield Static("hello")

    start = time.perf_counter()
    async with Bare().run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        return time.perf_counter() - start


async def redraw_times(run_dir: Path, repeats: int = 20) -> dict[str, float]:
    """Median ms at 160x48: building and drawing all charts, and a whole screen update; and the
    seconds a step back takes (the advisor only goes forward, so it is rebuilt from the start)."""
    app = LrtuiApp(run_dir, "replay", autoplay=False, start_at_end=True, system_interval=0)
    charts_ms, frame_ms = [], []
    async with app.run_test(size=(160, 48)) as pilot:
        while not (app.position is not None and app.view.state is not None
                   and app.view.state.step == int(app.position)):
            await pilot.pause(0.01)
        app.redraw()
        await pilot.pause()
        widgets = list(app.screen.query(Chart))
        for _ in range(repeats):
            app.log_scale = not app.log_scale  # every chart drawn anew, nothing else moves
            t = time.perf_counter()
            app.redraw()
            for w in widgets:
                w._make_strips()  # what the screen draws: the chart as strips of segments
            charts_ms.append((time.perf_counter() - t) * 1000)
            app.log_scale = not app.log_scale
            t = time.perf_counter()
            app.redraw()
            await pilot.pause()
            frame_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await pilot.press("left")
        while not (app.view.state is not None and app.view.state.step == int(app.position)):
            await pilot.pause(0.01)
        back = time.perf_counter() - t
    return {"charts": statistics.median(charts_ms), "frame": statistics.median(frame_ms), "back": back}


WRITER = textwrap.dedent("""
    import sys, time
    from lrtui.runlog import RunWriter
    run_dir, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    w = RunWriter(run_dir, {"name": "follow", "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.05}]}})
    start = time.time(); i = 0
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        while i < due:
            w.write("step", i, loss=1.0 / (1 + i * 1e-3), grad_norm=1.0, update_norm=0.05,
                    weight_norm=1.0, lr=[0.05], effective_lr=[None])
            i += 1
        time.sleep(0.01)
    w.close()
    print(i)
""")


async def follow_cpu(run_dir: Path, rate: float, seconds: float) -> dict[str, float]:
    """The app's CPU (all its threads) while another process logs ``rate`` events/s."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(rate), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    app = LrtuiApp(run_dir, "watch", refresh=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        while app.view.data.last_step is None or app.view.data.last_step < rate:  # past the start
            await pilot.pause(0.05)
        cpu0, wall0, seen0 = time.process_time(), time.perf_counter(), app.view.data.count
        await pilot.pause(seconds - 2.5)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        seen = app.view.data.count - seen0
        redraws = app.redraws
    written = int(writer.communicate(timeout=60)[0].strip() or 0)
    return {"cpu": cpu / wall, "rate_seen": seen / wall, "written": written, "redraws": redraws}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s while following")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of following")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "long-run"
        t = time.perf_counter()
        write_long_run(run_dir, args.steps)
        size_mb = (run_dir / "events.jsonl").stat().st_size / 1e6
        print(f"wrote {args.steps:,} steps ({size_mb:.0f} MB) in {time.perf_counter() - t:.1f} s", flush=True)
        bare = asyncio.run(bare_textual_start())
        first = asyncio.run(first_screen(run_dir))
        redraw = asyncio.run(redraw_times(run_dir))
        follow = asyncio.run(follow_cpu(Path(tmp) / "follow", args.rate, args.seconds))
    rows = [
        (f"first screen, replay of {args.steps:,} steps", f"{first['first']:.2f} s", "<= 2 s"),
        ("  (a bare Textual app's first frame, same machine)", f"{bare:.2f} s", "-"),
        ("end key right after: rest of the run read, advisor at end", f"{first['end']:.2f} s", "-"),
        ("build + draw all 4 charts at 160x48 (median)", f"{redraw['charts']:.1f} ms", "<= 50 ms"),
        ("whole screen update at 160x48 (median)", f"{redraw['frame']:.1f} ms", "-"),
        ("one step back at the end (advisor rebuilt)", f"{redraw['back']:.2f} s", "-"),
        (f"CPU following {args.rate:,.0f} events/s ({args.seconds:.0f} s)",
         f"{follow['cpu'] * 100:.1f} % of a core", "<= 15 %"),
        ("events/s the app took in while following", f"{follow['rate_seen']:,.0f}", f"{args.rate:,.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'measured':>18}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}")
    print(f"\n(cpu count {os.cpu_count()}, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
