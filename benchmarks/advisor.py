"""Benchmark of the advisor: ``lrtui advise`` on a 10^6-step run, and the cost of one incremental update.

Writes a synthetic run with RunWriter to a temporary directory (a noisy decay into an equilibrium,
an LR drop, one catapult, sharpness every 100 steps), then times, side by side in one process:
loading the run, the bulk advisor path, the whole ``advise --json`` command (a subprocess), and
the incremental path per event. Run: ``python benchmarks/advisor.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lrtui.advisor import STEP_FIELDS_READ, Advisor
from lrtui.runlog import RunWriter, load_run
from lrtui.runlog.format import restore_non_finite


def write_run(path: Path, steps: int, seed: int = 0) -> None:
    """A long synthetic SGD run: decay to an equilibrium, catapult, LR drop at 60%."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    lr = np.where(t < int(0.6 * steps), 0.1, 0.01)
    loss = 0.3 + 0.6 * np.exp(-t / (steps / 50)) + 0.05 * rng.standard_normal(steps)
    after = t >= int(0.6 * steps)  # the LR drop: the loss falls to a lower level
    loss[after] -= 0.2 * (1 - np.exp(-(t[after] - int(0.6 * steps)) / (steps / 100)))
    c = int(0.3 * steps)
    loss[c:c + 20] *= 8.0  # a catapult
    grad = 1.0 + 0.1 * rng.standard_normal(steps)
    meta = {"name": "bench", "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.9}]}}
    w = RunWriter(path, meta, max_pending=10_000_000)
    now = time.time()
    for i in range(steps):
        w.write("step", i, loss=float(loss[i]), grad_norm=float(grad[i]), update_norm=0.01,
                weight_norm=1.0, lr=[float(lr[i])], effective_lr=[None])
        if i % 100 == 0:
            w.write("sharpness", i, method="hessian", value=float(30 + 5 * math.sin(i)), hvps=5,
                    seconds=0.01, tolerance=1e-3, converged=True, warm_start=True)
        if i % 5000 == 0:
            w.flush()
    w.close()
    del now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7, help="runs of the whole command (median and min shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench"
        t0 = time.perf_counter()
        write_run(path, args.steps)
        t_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        run = load_run(path)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_run(path, step_fields=STEP_FIELDS_READ)
        t_load_fields = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_run(path, step_fields=STEP_FIELDS_READ, workers=None)
        t_load_parallel = time.perf_counter() - t0
        t0 = time.perf_counter()
        bulk = Advisor.from_run(run).state()
        t_bulk = time.perf_counter() - t0

        # The whole command, several times (this kind of machine is noisy), two ways: as the
        # machines here run Python (PYTHONDONTWRITEBYTECODE set: lrtui's modules are compiled at
        # every start), and with all bytecode cached as after a normal install's first run (the
        # cache in a temporary folder, not next to the sources).
        cli = [sys.executable, "-c", "import sys; from lrtui.cli import main; sys.exit(main())", "advise", "--json", str(path)]
        compiled_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        cached_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached_env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run(cli, capture_output=True, env=cached_env)  # writes the bytecode cache
        t_cli: dict[str, list[float]] = {"compiled": [], "cached": []}
        for _ in range(args.repeat):
            for kind, env in (("compiled", compiled_env), ("cached", cached_env)):
                t0 = time.perf_counter()
                proc = subprocess.run(cli, capture_output=True, text=True, env=env)
                t_cli[kind].append(time.perf_counter() - t0)

        # incremental: events as the follower gives them (decoded, floats restored)
        from lrtui.runlog.format import decode_lines
        lines = (path / "events.jsonl").read_bytes().split(b"\n")[:200_000]
        events, _ = decode_lines([ln for ln in lines if ln])
        events = [restore_non_finite(e) for e in events]
        adv = Advisor(run.meta)
        t0 = time.perf_counter()
        adv.update_many(events)
        t_inc = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(1000):
            adv.state()
        t_state = (time.perf_counter() - t0) / 1000

    events_total = len(run.data)
    rows = [
        ("write the run (RunWriter)", t_write, f"{args.steps} steps, {events_total} events"),
        ("load_run", t_load, "every field, one process"),
        ("load_run, the advisor's fields", t_load_fields, f"{', '.join(STEP_FIELDS_READ)}"),
        ("  ... and workers=None", t_load_parallel, f"{os.cpu_count()} cores: what advise does"),
        ("Advisor.from_run (bulk)", t_bulk, f"regime {bulk.regime}, {len(bulk.recommendations)} recs"),
        ("lrtui advise --json (process)", statistics.median(t_cli["compiled"]),
         f"median of {args.repeat}, min {min(t_cli['compiled']):.2f} s; no bytecode cache (target <= 2 s)"),
        ("  ... bytecode cached", statistics.median(t_cli["cached"]),
         f"median of {args.repeat}, min {min(t_cli['cached']):.2f} s; as after a normal install (exit {proc.returncode})"),
        ("incremental, per event", t_inc / len(events), f"over {len(events)} events (target <= 20 us)"),
        ("state(), per call", t_state, f"{len(bulk.segments)} segments"),
    ]
    print(f"{'what':34s} {'seconds':>12s}  note")
    for name, sec, note in rows:
        shown = f"{sec * 1e6:9.2f} us" if sec < 1e-2 else f"{sec:10.3f} s"
        print(f"{name:34s} {shown:>12s}  {note}")
    if proc.returncode not in (0, 3):
        print(proc.stderr, file=sys.stderr)


if __name__ == "__main__":
    main()
