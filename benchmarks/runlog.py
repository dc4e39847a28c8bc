"""Benchmark of the run log: write throughput, full-run load time and peak memory, follow latency.

For 10^4, 10^5 and 10^6 events of a realistic mix (96% step events with three param groups, so
15 values each; sharpness every 50 steps, system every 100, overhead every 500), measured side by
side in one run:

- write: ``RunWriter.write`` from a loop like the probe's, until ``close()`` has it all on disk
  (events/s end to end) and the time the loop itself spends per event (what training pays);
- load: ``load_run`` in a fresh process per size (wall and CPU seconds, and the peak resident
  memory the load adds, from ``ru_maxrss`` minus the resident size before it), next to a plain
  baseline loader in its own fresh process: ``json.loads`` per line, then numpy columns;
- follow latency: a writer process writes an event every 20 ms with default settings; the time
  from its ``write`` call to ``RunFollower`` handing the event over, with inotify and polling.

- loader arms (``--loader``): a ~128 MB log loaded whole in a fresh process, arm after arm in
  turn, several times: the one-process loader twice (the A/A row: how far two runs of the same
  code differ here) and, where this checkout still has it (``load_run(..., workers=None)``, before
  the parallel loader was deleted), the parallel loader; medians side by side. The same for the
  advisor's projection (``step_fields=STEP_FIELDS_READ``, what ``lrtui advise`` reads).

- metric names (``--names``): a log whose every metric event names a new metric (N events, N
  names, plus N step events), loaded in a fresh process for N = 2,000, 8,000 and 20,000: wall
  seconds and peak resident memory, to show the growth with N (linear with the column cap;
  quadratic before it).

Run: ``python benchmarks/runlog.py`` (about 3 minutes here) or ``--quick`` (10^4 and 10^5 only);
``python benchmarks/runlog.py --loader [--loader-mb 128 --repeats 5]`` for the loader arms only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from lrtui.runlog import RunFollower, RunWriter

GROUPS = 3


def write_run(path: Path, n: int) -> tuple[float, float, float]:
    """Write ``n`` events; returns (events/s until all is on disk, events per CPU second of this
    process (the loop, the writer thread, the encoding), loop microseconds per event)."""
    meta = {"name": path.name, "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1}] * GROUPS}}
    writer = RunWriter(path, meta, max_pending=10_000_000)
    start, cpu = time.perf_counter(), time.process_time()
    step = 0
    for i in range(n):
        if i % 100 == 50:
            writer.write("sharpness", step, method="hessian", value=40.0 + i % 7, hvps=6, seconds=0.004,
                         tolerance=1e-3, converged=True, warm_start=True)
        elif i % 100 == 99:
            writer.write("system", step, source="probe", cpu_percent=97.5, rss=812_000_000)
        elif i % 500 == 250:
            writer.write("overhead", step, fraction=0.031, probe_seconds=1.5, wall_seconds=48.0, budget=0.05)
        else:
            loss = 2.3 / (1 + step * 1e-3) + (step % 13) * 1e-3
            writer.write("step", step, loss=loss, grad_norm=1.7 + (step % 5) * 0.01,
                         update_norm=0.0041 + step * 1e-9, weight_norm=31.6 - step * 1e-6,
                         lr=[0.1, 0.05, 0.01], effective_lr=[0.1 / 31.6, None, None])
            step += 1
    loop = time.perf_counter() - start
    writer.close()
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / total, n / cpu, loop / n * 1e6


LOAD_CHILD = textwrap.dedent("""
    import json, resource, sys, time

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    how, path = sys.argv[1], sys.argv[2]
    import numpy as np
    from lrtui.runlog import load_run
    before = rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if how == "lrtui":
        run = load_run(path)
        n = len(run.table("step")["loss"])
    else:  # the plain way: json.loads per line, then one numpy column per field
        columns = {}
        with open(path + "/events.jsonl", "rb") as f:
            for line in f:
                event = json.loads(line)
                kind = columns.setdefault(event["kind"], {})
                for key, value in event.items():
                    kind.setdefault(key, []).append(value)
        def column(values):
            try:
                return np.array(values, dtype=float)
            except (TypeError, ValueError):
                return np.array(values, dtype=object)
        tables = {k: {f: column(v) for f, v in fields.items()} for k, fields in columns.items()}
        n = len(tables["step"]["loss"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak, "steps": n}))
""")


def load_in_fresh_process(how: str, path: Path, repeats: int) -> dict:
    """Best of ``repeats`` fresh-process loads (the machine is shared; the best is the least disturbed)."""
    best = None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_CHILD, how, str(path)], capture_output=True,
                             text=True, check=True)
        result = json.loads(out.stdout)
        if best is None or result["wall"] < best["wall"]:
            best = result
    return best


LOADER_CHILD = textwrap.dedent("""
    import inspect, json, sys, time
    from lrtui.runlog import load_run
    arm, path, projected = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    kwargs = {}
    if projected:
        from lrtui.advisor import STEP_FIELDS_READ
        kwargs["step_fields"] = STEP_FIELDS_READ
    if arm == "parallel":
        if "workers" not in inspect.signature(load_run).parameters:
            print(json.dumps({"wall": None}))
            sys.exit(0)
        kwargs["workers"] = None
    elif "workers" in inspect.signature(load_run).parameters:
        kwargs["workers"] = 1
    wall = time.perf_counter()
    run = load_run(path, **kwargs)
    wall = time.perf_counter() - wall
    print(json.dumps({"wall": wall, "steps": len(run.table("step")["step"])}))
""")
LOADER_ARMS = ("single", "single (A/A)", "parallel")


def loader_rows(root: Path, megabytes: int, repeats: int) -> list[tuple[str, bool, list[float]]]:
    """(arm, projected, wall seconds of each repeat) for the loader arms on one ~``megabytes`` log."""
    path = root / "loader"
    n = int(megabytes * 2**20 / 225)  # ~225 bytes per event of this mix
    write_run(path, n)
    walls: dict[tuple[str, bool], list[float]] = {(a, p): [] for a in LOADER_ARMS for p in (False, True)}
    steps = set()
    for _ in range(repeats):  # arm after arm in turn, so a slow spell of the machine hits every arm
        for (arm, projected), times in walls.items():
            out = subprocess.run([sys.executable, "-c", LOADER_CHILD, arm.split()[0], str(path), str(int(projected))],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            if result["wall"] is not None:
                times.append(result["wall"])
                steps.add(result["steps"])
    assert len(steps) <= 1, f"arms disagree on the steps: {steps}"
    size_mb = (path / "events.jsonl").stat().st_size / 2**20
    print(f"\nloader arms: {size_mb:.0f} MB, {n:,} events, {repeats} fresh-process loads per arm, in turn")
    return [(arm, projected, times) for (arm, projected), times in walls.items()]


def print_loader_rows(rows: list[tuple[str, bool, list[float]]]) -> None:
    base = {p: statistics.median(t) for a, p, t in rows if a == "single" and t}
    print("| arm | columns | median s | min / max s | median / single |")
    print("|---|---|---:|---:|---:|")
    for arm, projected, times in rows:
        what = "advisor's (step_fields)" if projected else "all"
        if not times:
            print(f"| {arm} | {what} | (not in this checkout) | | |")
            continue
        med = statistics.median(times)
        print(f"| {arm} | {what} | {med:.3f} | {min(times):.3f} / {max(times):.3f} | {med / base[projected]:.2f}x |")


NAMES_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from lrtui.runlog import load_run
    wall = time.perf_counter()
    run = load_run(sys.argv[1])
    wall = time.perf_counter() - wall
    print(json.dumps({"wall": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "columns": len(run.table("metric"))}))
""")


def names_rows(root: Path, sizes: list[int]) -> None:
    """Load time and peak memory of logs with N distinct metric names, N events each kind."""
    print("| metric names (= metric events) | load s | peak MB | metric columns |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        path = root / f"names-{n}"
        path.mkdir()
        (path / "meta.json").write_text(json.dumps({"schema": "1.0", "name": path.name}))
        with open(path / "events.jsonl", "wb") as f:
            for i in range(n):
                f.write(b'{"kind":"step","step":%d,"time":%d,"loss":1.0}\n' % (i, i))
                f.write(b'{"kind":"metric","step":%d,"time":%d,"m%d":0.5}\n' % (i, i, i))
        out = subprocess.run([sys.executable, "-c", NAMES_CHILD, str(path)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout)
        print(f"| {n:,} | {r['wall']:.2f} | {r['peak_mb']:.0f} | {r['columns']:,} |", flush=True)


FOLLOW_WRITER = textwrap.dedent("""
    import sys, time
    from lrtui.runlog import RunWriter
    w = RunWriter(sys.argv[1], {"name": "latency"})  # default flush interval
    time.sleep(0.5)
    for i in range(int(sys.argv[2])):
        w.write("step", i, loss=1.0, lr=[0.1])
        time.sleep(0.02)
    w.close()
""")


def follow_latency(root: Path, use_inotify: bool, n: int) -> tuple[float, float, str]:
    """Median and 95th percentile seconds from write() in another process to the follower."""
    run = root / f"latency-{'inotify' if use_inotify else 'polling'}"
    follower = RunFollower(run, use_inotify=use_inotify)
    child = subprocess.Popen([sys.executable, "-c", FOLLOW_WRITER, str(run), str(n)])
    delays: list[float] = []
    done = False
    deadline = time.monotonic() + 60 + n * 0.1
    while not done and time.monotonic() < deadline:
        batch = follower.read_new()
        now = time.time()
        for event in batch.events:
            if event["kind"] == "step":
                delays.append(now - event["time"])
            done = done or event["kind"] == "end"
        if not batch.events:
            follower.wait()
    child.wait()
    mode = follower.mode
    follower.close()
    delays.sort()
    return statistics.median(delays), delays[int(0.95 * (len(delays) - 1))], mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 events only, fewer samples")
    parser.add_argument("--loader", action="store_true", help="only the loader arms (one process vs parallel)")
    parser.add_argument("--loader-mb", type=int, default=128, help="size of the loader arms' log (MB)")
    parser.add_argument("--repeats", type=int, default=5, help="loads per loader arm")
    parser.add_argument("--names", type=int, nargs="*", help="only the metric-names rows (default sizes "
                        "2000 8000 20000)")
    args = parser.parse_args()
    if args.names is not None:
        with tempfile.TemporaryDirectory() as tmp:
            names_rows(Path(tmp), args.names or [2000, 8000, 20000])
        return
    if args.loader:
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
              f"{os.getloadavg()[0]:.1f} at start", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            print_loader_rows(loader_rows(Path(tmp), args.loader_mb, args.repeats))
        print(f"\nload average at end {os.getloadavg()[0]:.1f}")
        return
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in sizes:
            path = root / f"run-{n}"
            rate, cpu_rate, caller_us = write_run(path, n)
            repeats = 1 if n >= 1_000_000 else (2 if args.quick or n >= 100_000 else 3)
            ours = load_in_fresh_process("lrtui", path, repeats)
            plain = load_in_fresh_process("json", path, 1)
            assert ours["steps"] == plain["steps"]
            size_mb = (path / "events.jsonl").stat().st_size / 2**20
            rows.append((n, size_mb, rate, cpu_rate, caller_us, ours, plain))
        samples = 30 if args.quick else 100
        latency = [follow_latency(root, inotify, samples) for inotify in (True, False)]

    print()
    print("| events | file MB | write events/s (per CPU s) | µs/event in the loop | load s (CPU s) "
          "| load peak MB | json.loads load s (CPU s) | load speed-up vs json.loads, wall (CPU) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, size_mb, rate, cpu_rate, caller_us, ours, plain in rows:
        print(f"| {n:,} | {size_mb:.0f} | {rate:,.0f} ({cpu_rate:,.0f}) | {caller_us:.1f} "
              f"| {ours['wall']:.2f} ({ours['cpu']:.2f}) | {ours['peak_mb']:.0f} "
              f"| {plain['wall']:.2f} ({plain['cpu']:.2f}) "
              f"| {plain['wall'] / ours['wall']:.1f}x ({plain['cpu'] / ours['cpu']:.1f}x) |")
    print()
    print("| follow (default settings: writer flush 0.25 s, follower poll 0.25 s) | median s | p95 s |")
    print("|---|---:|---:|")
    for (median, p95, mode) in latency:
        print(f"| {mode} | {median:.3f} | {p95:.3f} |")
    print(f"\nload average at end {os.getloadavg()[0]:.1f} (2 cores shared with other work: timings are noisy)")


if __name__ == "__main__":
    main()
