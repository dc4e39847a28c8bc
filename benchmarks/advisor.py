"""Benchmark of the advisor: ``lrtui advise`` on a 10^6-step run, and the cost of one incremental update.

Writes a synthetic run with RunWriter to a temporary directory (a noisy decay into an equilibrium,
an LR drop, one catapult, sharpness every 100 steps), then times, side by side in one process:
loading the run, the bulk advisor path, and the whole ``advise --json`` command as a process
against a bare msgspec decode of the same ``events.jsonl`` as a process (``decode_lines``: the
least any reader must do), interleaved, with an A/A row (the bare decode against itself: what
the machine's noise alone does to a ratio). Then the incremental path per event, on that run and
on a scheduled one (linear warm-up + cosine decay, judged as one phase), with ``state()`` asked
every 1,000 events as the app does. Run: ``python benchmarks/advisor.py [--steps N]``.
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
from lrtui.runlog.numbers import restore_non_finite


def write_run(path: Path, steps: int, seed: int = 0, schedule: str = "drop") -> None:
    """A long synthetic SGD run: decay to an equilibrium, catapult, LR drop at 60% (``drop``), or
    the same loss under a linear warm-up (5%) and a cosine decay of the LR (``cosine``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    if schedule == "cosine":
        warm = max(steps // 20, 1)
        lr = 0.1 * np.minimum(1.0, (t + 1) / warm) * 0.5 * (1 + np.cos(np.pi * t / steps))
    else:
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
        bulk = Advisor.from_run(run).state()
        t_bulk = time.perf_counter() - t0

        # The whole command against a bare msgspec decode of the same log, both as processes,
        # interleaved, several times (this kind of machine is noisy); bytecode cached as after a
        # normal install's first run (the cache in a temporary folder, not next to the sources).
        # The bare decode runs twice per round (A and A'): their ratio is the A/A row.
        cli = [sys.executable, "-c", "import sys; from lrtui.cli import main; sys.exit(main())", "advise", "--json", str(path)]
        bare = [sys.executable, "-c", "import sys, msgspec; msgspec.json.Decoder().decode_lines(open(sys.argv[1], 'rb').read())",
                str(path / "events.jsonl")]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run(cli, capture_output=True, env=env)  # writes the bytecode cache (and warms the file cache)
        subprocess.run(bare, capture_output=True, env=env)
        t_arm: dict[str, list[float]] = {"advise": [], "bare": [], "bare2": []}
        for _ in range(args.repeat):
            for arm, cmd in (("bare", bare), ("advise", cli), ("bare2", bare)):
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                t_arm[arm].append(time.perf_counter() - t0)
                if arm == "advise":
                    advise_rc, advise_err = proc.returncode, proc.stderr
        ratios = [a / b for a, b in zip(t_arm["advise"], t_arm["bare"])]
        aa = [a / b for a, b in zip(t_arm["bare2"], t_arm["bare"])]

        # incremental: events as the follower gives them (decoded, floats restored), state() every
        # 1,000 events; on this run and on a scheduled one (warm-up + cosine)
        from lrtui.runlog.format import decode_lines
        t_inc: dict[str, tuple[float, int]] = {}
        sched = Path(tmp) / "cosine"
        write_run(sched, min(args.steps, 200_000), schedule="cosine")
        for name, where in (("drop", path), ("cosine", sched)):
            lines = (where / "events.jsonl").read_bytes().split(b"\n")[:200_000]
            events, _ = decode_lines([ln for ln in lines if ln])
            events = [restore_non_finite(e) for e in events]
            adv = Advisor(load_run(where).meta)
            t0 = time.perf_counter()
            for k in range(0, len(events), 1000):
                adv.update_many(events[k:k + 1000])
                adv.state()
            t_inc[name] = (time.perf_counter() - t0, len(events))
            if name == "cosine":
                sched_state = adv.state()
        t0 = time.perf_counter()
        for _ in range(1000):
            adv.state()
        t_state = (time.perf_counter() - t0) / 1000

    events_total = len(run.data)
    rows = [
        ("write the run (RunWriter)", t_write, f"{args.steps} steps, {events_total} events"),
        ("load_run", t_load, "every field, one process"),
        ("load_run, the advisor's fields", t_load_fields, f"{', '.join(STEP_FIELDS_READ)}"),
        ("Advisor.from_run (bulk)", t_bulk, f"regime {bulk.regime}, {len(bulk.recommendations)} recs"),
        ("bare msgspec decode (process) A", statistics.median(t_arm["bare"]),
         f"median of {args.repeat}, min {min(t_arm['bare']):.2f} s; decode_lines of events.jsonl"),
        ("  ... A' (the same again)", statistics.median(t_arm["bare2"]), f"A'/A median {statistics.median(aa):.3f} "
         f"(range {min(aa):.3f}-{max(aa):.3f}): the A/A row"),
        ("lrtui advise --json (process)", statistics.median(t_arm["advise"]),
         f"/A median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.3); exit {advise_rc}"),
        ("incremental, per event", t_inc["drop"][0] / t_inc["drop"][1],
         f"over {t_inc['drop'][1]} events, state() every 1,000 (target <= 20 us)"),
        ("  ... scheduled run", t_inc["cosine"][0] / t_inc["cosine"][1],
         f"warm-up + cosine, {t_inc['cosine'][1]} events: {len(sched_state.segments)} phase(s), regime {sched_state.regime}"),
        ("state(), per call", t_state, f"{len(bulk.segments)} segments"),
    ]
    print(f"{'what':34s} {'seconds':>12s}  note")
    for name, sec, note in rows:
        shown = f"{sec * 1e6:9.2f} us" if sec < 1e-2 else f"{sec:10.3f} s"
        print(f"{name:34s} {shown:>12s}  {note}")
    if advise_rc not in (0, 3):
        print(advise_err, file=sys.stderr)


if __name__ == "__main__":
    main()
