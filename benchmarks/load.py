"""Load: a writer at 50k events/s while a follower process and the real app read the same run; nothing lost.

    python benchmarks/load.py                      # 60 s at 50,000 events/s, app included
    python benchmarks/load.py --seconds 10 --no-app

The writer (its own process, lrtui.runlog.RunWriter) and the follower (its own process,
RunFollower with inotify) each keep a CRC-32 of every step event's (step, loss) in order; the
follower also records its resident memory as it goes. The app (LrtuiApp in watch mode, headless)
follows the same run in this process while a key is pressed every half second and the time until
it is handled is measured. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import psutil


def writer_role(run_dir: Path, rate: float, seconds: float) -> None:
    """Write ``rate`` step events a second for ``seconds``, paced in 2 ms slices; print a summary."""
    from lrtui.runlog import RunWriter

    rng = random.Random(0)
    writer = RunWriter(run_dir, {"name": "load", "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1}]}})
    total = int(rate * seconds)
    step = 0
    began = time.perf_counter()
    while step < total:
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        while step < due:
            writer.write("step", step, loss=rng.random(), grad_norm=1.5, update_norm=0.01, weight_norm=1.0,
                         lr=[0.1], effective_lr=[None], sample=step % 7, phase="pretrain")
            step += 1
        time.sleep(0.002)
    seconds_taken = time.perf_counter() - began
    writer.close()
    # The checksum of what was written, recomputed from the same seeded sequence (one draw per
    # event) after the clock stopped, so it costs the paced loop nothing.
    rng = random.Random(0)
    crc = 0
    for i in range(step):
        crc = zlib.crc32(f"{i}:{rng.random()!r};".encode(), crc)
    print(json.dumps({"written": step, "seconds": seconds_taken, "crc": crc, "dropped": writer.dropped,
                      "error": writer.error}), flush=True)


def follower_role(run_dir: Path, timeout: float) -> None:
    """Follow until the end record (or ``timeout``); print count, checksum and memory figures."""
    from lrtui.runlog import RunFollower

    process = psutil.Process()
    rss_start = process.memory_info().rss
    rss_peak = rss_start
    crc = 0
    count = 0
    skipped = 0
    resets = 0
    largest_batch = 0
    ended = False
    deadline = time.monotonic() + timeout
    with RunFollower(run_dir) as follower:
        while not ended and time.monotonic() < deadline:
            batch = follower.read_new()
            resets += batch.reset
            skipped += batch.skipped
            largest_batch = max(largest_batch, len(batch.events))
            for event in batch.events:
                if event["kind"] == "step":
                    crc = zlib.crc32(f"{event['step']}:{event['loss']!r};".encode(), crc)
                    count += 1
                elif event["kind"] == "end":
                    ended = True
            rss_peak = max(rss_peak, process.memory_info().rss)
            if not batch.events:
                follower.wait(0.05)
        mode = follower.mode
    print(json.dumps({"followed": count, "crc": crc, "skipped": skipped, "resets": resets, "ended": ended,
                      "rss_start": rss_start, "rss_peak": rss_peak,
                      "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "largest_batch": largest_batch, "mode": mode}), flush=True)


async def _watch_with_app(run_dir: Path, writer: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Follow the run in the real app while the writer runs; press "l" every 0.5 s, time each."""
    from lrtui.app import LrtuiApp

    app = LrtuiApp(run_dir, "watch", refresh=0.5, system_interval=0)
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    async with app.run_test(size=(120, 40)) as pilot:
        while writer.poll() is None and time.monotonic() < deadline:
            before = app.log_scale
            began = time.perf_counter()
            await pilot.press("l")
            while app.log_scale == before and time.perf_counter() - began < 30:
                await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.5)
        await pilot.pause(1.0)
        seen = app.view.data.count if app.view is not None else 0
    return {"latencies": latencies, "app_events": seen, "redraws": app.redraws}


def run_load(seconds: float, rate: float, with_app: bool, workdir: Path | None = None) -> dict[str, Any]:
    """Run writer, follower (and app); return every figure. Both children are real processes."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrtui-load-")
        workdir = Path(tmp.name)
    run_dir = workdir / "run"
    here = str(Path(__file__).resolve())
    follower = subprocess.Popen([sys.executable, here, "--role", "follower", "--dir", str(run_dir),
                                 "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the follower starts before the run exists, as `lrtui watch` often does
    writer = subprocess.Popen([sys.executable, here, "--role", "writer", "--dir", str(run_dir),
                               "--seconds", str(seconds), "--rate", str(rate)], stdout=subprocess.PIPE, text=True)
    app: dict[str, Any] = {}
    if with_app:
        while not (run_dir / "meta.json").exists() and writer.poll() is None:
            time.sleep(0.05)
        app = asyncio.run(_watch_with_app(run_dir, writer, seconds + 120))
    w_out, _ = writer.communicate(timeout=seconds + 120)
    f_out, _ = follower.communicate(timeout=seconds + 180)
    assert writer.returncode == 0 and follower.returncode == 0, (writer.returncode, follower.returncode)
    result = {"writer": json.loads(w_out), "follower": json.loads(f_out), "app": app,
              "target_rate": rate, "target_seconds": seconds}
    if tmp is not None:
        tmp.cleanup()
    return result


def print_table(result: dict[str, Any]) -> None:
    w, f, app = result["writer"], result["follower"], result["app"]
    rows = [
        ("target", f"{result['target_rate']:,.0f} events/s for {result['target_seconds']:g} s"),
        ("written", f"{w['written']:,} events in {w['seconds']:.1f} s = {w['written'] / w['seconds']:,.0f} events/s"),
        ("writer dropped", f"{w['dropped']}"),
        ("followed", f"{f['followed']:,} events ({f['mode']}), end record seen: {f['ended']}"),
        ("lost", f"{w['written'] - f['followed']}"),
        ("checksum (CRC-32 of step:loss)", f"writer {w['crc']:08x}  follower {f['crc']:08x}  "
                                           f"{'equal' if w['crc'] == f['crc'] else 'DIFFERENT'}"),
        ("skipped lines / resets", f"{f['skipped']} / {f['resets']}"),
        ("follower RSS start -> peak", f"{f['rss_start'] / 2**20:.0f} MB -> {f['rss_peak'] / 2**20:.0f} MB"),
        ("follower largest batch", f"{f['largest_batch']:,} events"),
    ]
    if app:
        lat = sorted(app["latencies"])
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
        rows += [
            ("app key presses handled", f"{len(lat)}"),
            ("app key latency median / p95 / max",
             f"{statistics.median(lat) * 1e3:.0f} / {p95 * 1e3:.0f} / {lat[-1] * 1e3:.0f} ms" if lat else "-"),
            ("app events loaded / redraws", f"{app['app_events']:,} / {app['redraws']}"),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"{'load':<{width}}  figure")
    print(f"{'-' * width}  {'-' * 60}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--no-app", action="store_true")
    parser.add_argument("--role", choices=["writer", "follower"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "writer":
        writer_role(Path(args.dir), args.rate, args.seconds)
    elif args.role == "follower":
        follower_role(Path(args.dir), args.seconds + 120)
    else:
        result = run_load(args.seconds, args.rate, not args.no_app)
        print_table(result)


if __name__ == "__main__":
    main()
