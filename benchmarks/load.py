"""Load: a writer at 50k events/s while a follower process and the real app read the same run; nothing lost.
With ``--kill-trials N``: how much a kill -9 at a random moment loses, idle and with CPU-bound neighbours.

    python benchmarks/load.py                      # 60 s at 50,000 events/s, app included
    python benchmarks/load.py --seconds 10 --no-app
    python benchmarks/load.py --kill-trials 50     # kill -9 trials: idle, 2 CPU-bound neighbours, pauses

The writer (its own process, lrtui.runlog.RunWriter) and the follower (its own process,
RunFollower with inotify) each keep a CRC-32 of every step event's (step, loss) in order; the
follower also records its resident memory as it goes. The app (LrtuiApp in watch mode, headless)
follows the same run in this process while a key is pressed every half second and the time until
it is handled is measured. Prints one table.

Kill trials: torch is imported once; each trial is a forked child training a small model with a
default ``Probe`` (stride 1, adaptive stride off so that every step is an event) that notes, after
each ``probe.step``, the step and the time in a side file (one O_APPEND write, which a kill cannot
tear). The parent kills it with SIGKILL after a random delay and compares with ``events.jsonl``:
*lost window* = kill time minus the time the oldest step not on disk was handed to the probe (0 when
every handed step is there) -- the format promises <= 0.5 s; *last on disk* = kill time minus the
time the newest step on disk was handed (the gap as a reader sees it: it also holds time the loop
spent without handing anything, e.g. in a sharpness estimate). A third condition pauses the loop
for 0.8 s every 400 steps, as an evaluation does: steps handed before a pause must not wait for
the next step to reach the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
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


#: The "evaluation" condition: the loop pauses this long (no probe call) every PAUSE_EVERY steps.
PAUSE_SECONDS = 0.8
PAUSE_EVERY = 400


def _kill_child(trial_dir: Path, pauses: bool) -> None:
    """Train until killed, noting ``STEP TIME`` after each probe.step (forked child; never returns)."""
    import torch

    from probes import Probe

    note = os.open(trial_dir / "handed", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = torch.randn(512, 16), torch.randn(512, 1)
    probe = Probe(model, optimizer, trial_dir / "run", loss_fn=torch.nn.functional.mse_loss,
                  hessian_batch=(inputs[:64], targets[:64]), adaptive_stride=False)
    os.write(note, b"ready\n")
    step = 0
    while True:
        batch = torch.randint(0, 512, (64,))
        loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss)
        os.write(note, f"{step} {time.time()!r}\n".encode())
        step += 1
        if pauses and step % PAUSE_EVERY == 0:
            time.sleep(PAUSE_SECONDS)  # an evaluation: steps handed before it must not wait for the next one


def _trial_figures(trial_dir: Path, killed_at: float) -> dict[str, Any] | None:
    """Lost window and last-on-disk gap of one killed trial (None if killed before the probe was ready)."""
    handed: dict[int, float] = {}
    ready = False
    for line in (trial_dir / "handed").read_bytes().splitlines():
        if line == b"ready":
            ready = True
        elif line.count(b" ") == 1:
            step, when = line.split()
            handed[int(step)] = float(when)
    if not ready:
        return None
    on_disk: set[int] = set()
    log = trial_dir / "run" / "events.jsonl"
    for line in (log.read_bytes().splitlines() if log.exists() else []):
        try:
            event = json.loads(line)
        except ValueError:  # the line the kill tore
            continue
        if event.get("kind") == "step":
            on_disk.add(event["step"])
    missing = [s for s in handed if s not in on_disk]
    lost = killed_at - handed[min(missing)] if missing else 0.0
    newest = max(on_disk, default=None)
    last = killed_at - handed[newest] if newest is not None and newest in handed else None
    return {"handed": len(handed), "on_disk": len(on_disk), "lost_window": max(0.0, lost), "last_on_disk": last}


def _neighbour() -> None:
    while True:  # a CPU-bound neighbour: pure Python, never sleeps
        pass


def run_kill_trials(trials: int, neighbours: int, seed: int, workdir: Path, pauses: bool = False) -> dict[str, Any]:
    """``trials`` kill -9 trials with ``neighbours`` CPU-bound processes running (and with
    ``pauses``, a loop that stops for an evaluation now and then); every figure."""
    import probes  # noqa: F401  (torch imported once, before forking)

    rng = random.Random(seed)
    hogs = []
    for _ in range(neighbours):
        pid = os.fork()
        if pid == 0:
            _neighbour()
        hogs.append(pid)
    results: list[dict[str, Any]] = []
    try:
        for trial in range(trials):
            trial_dir = workdir / f"n{neighbours}{'-pauses' if pauses else ''}-trial-{trial:03d}"
            trial_dir.mkdir(parents=True)
            pid = os.fork()
            if pid == 0:
                try:
                    _kill_child(trial_dir, pauses)
                finally:
                    os._exit(1)
            # Wait for the probe, then train a random while: the kill lands anywhere in a step.
            while not (trial_dir / "handed").exists() or b"ready" not in (trial_dir / "handed").read_bytes()[:6]:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.3, 2.5))
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            figures = _trial_figures(trial_dir, killed_at)
            if figures is not None:
                results.append(figures)
    finally:
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return {"neighbours": neighbours, "pauses": pauses, "trials": trials, "results": results}


def print_kill_table(runs: list[dict[str, Any]]) -> None:
    print(f"{'condition':<36} {'trials':>6} {'steps/trial':>11} {'lost window max / p95 / median':>32} "
          f"{'last on disk max / median':>27}")
    for run in runs:
        res = run["results"]
        lost = sorted(r["lost_window"] for r in res)
        last = sorted(r["last_on_disk"] for r in res if r["last_on_disk"] is not None)
        p95 = lost[min(len(lost) - 1, int(0.95 * len(lost)))] if lost else float("nan")
        steps = statistics.median(r["handed"] for r in res) if res else 0
        name = "idle" if not run["neighbours"] else f"{run['neighbours']} CPU-bound neighbours"
        if run.get("pauses"):
            name += f", {PAUSE_SECONDS:g} s pauses"
        lost_text = f"{lost[-1]:.3f} / {p95:.3f} / {statistics.median(lost):.3f} s" if lost else "-"
        last_text = f"{last[-1]:.3f} / {statistics.median(last):.3f} s" if last else "-"
        print(f"{name:<36} {len(res):>6} {steps:>11,.0f} {lost_text:>32} {last_text:>27}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--no-app", action="store_true")
    parser.add_argument("--kill-trials", type=int, default=0, help="kill -9 trials per condition instead")
    parser.add_argument("--neighbours", type=int, nargs="*", default=[0, 2],
                        help="CPU-bound neighbour counts, one condition each (default: 0 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-pauses", action="store_true",
                        help="kill trials: leave out the condition whose loop pauses for evaluations")
    parser.add_argument("--json", action="store_true", help="kill trials: also print every figure as JSON")
    parser.add_argument("--role", choices=["writer", "follower"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "writer":
        writer_role(Path(args.dir), args.rate, args.seconds)
    elif args.role == "follower":
        follower_role(Path(args.dir), args.seconds + 120)
    elif args.kill_trials:
        with tempfile.TemporaryDirectory(prefix="lrtui-kill-") as tmp:
            runs = [run_kill_trials(args.kill_trials, n, args.seed, Path(tmp)) for n in args.neighbours]
            if not args.no_pauses:
                runs.append(run_kill_trials(args.kill_trials, 0, args.seed, Path(tmp), pauses=True))
        print_kill_table(runs)
        if args.json:
            print(json.dumps(runs))
    else:
        result = run_load(args.seconds, args.rate, not args.no_app)
        print_table(result)


if __name__ == "__main__":
    main()
