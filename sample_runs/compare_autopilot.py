"""The autopilot against the sample sweep's fixed recipe, on the paper's task, over seeds.

``python sample_runs/compare_autopilot.py --out DIR`` records, for each LR and seed:

(a) ``fixed``: the sample sweep's recipe (``train_ticks``): 10,000 steps at the LR, weights averaged
    over the last 2,000 of them (every 100), then 5,000 fine-tuning steps at 1e-3: 15,000 steps;
(b) ``autopilot``: ``Probe(autopilot=True)`` at the same constant LR, no schedule, 15,000 steps:
    when the advisor sees the equilibrium the autopilot starts SWA, and drops the LR (x0.1) once
    the averaging window the advisor sized is complete;
(b') ``autopilot-short``: the same, stopped 5,000 steps after the drop (fewer steps);
(c) ``averaging``: ``Probe(autopilot="start_averaging")``: SWA started by the autopilot, the LR kept,
    10,000 steps (the fixed recipe's averaging also ends at step 10,000).

and prints the table of docs/control.md (means with standard errors over the seeds). ``--table``
prints it from the runs already recorded. Runs are recorded two at a time, one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sample_runs.make_samples import (  # noqa: E402
    AVERAGE_EVERY,
    AVERAGE_LAST,
    FINETUNE_LR,
    FINETUNE_STEPS,
    PRETRAIN_STEPS,
    SWEEP_GEOMETRY,
    SWEEP_STRIDE,
)

#: LRs inside the band ``lrtui advise sample_runs/sweep`` recommends (0.00658 .. 0.0165).
LRS = (0.00811, 0.0123)
SEEDS = (0, 1, 2)
ARMS = ("fixed", "autopilot", "autopilot-short", "averaging")


def _record(job: tuple[str, float, int, str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from probes.tasks.autopilot import train_ticks_autopilot
    from probes.tasks.training import train_ticks

    arm, lr, seed, root = job
    run_dir = Path(root) / arm / f"lr-{lr:.2e}-seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    common = {"stride": SWEEP_STRIDE, "geometry": SWEEP_GEOMETRY, "seed": seed}
    if arm == "fixed":
        s = train_ticks(run_dir, lr, pretrain_steps=PRETRAIN_STEPS, finetune_steps=FINETUNE_STEPS,
                        finetune_lr=FINETUNE_LR, average_last=AVERAGE_LAST, average_every=AVERAGE_EVERY, **common)
        out = {"trained": s["finetune"], "averaged": s["swa"], "steps": PRETRAIN_STEPS + FINETUNE_STEPS,
               "dropped_at": PRETRAIN_STEPS, "averaging_from": PRETRAIN_STEPS - AVERAGE_LAST}
    else:
        total = PRETRAIN_STEPS if arm == "averaging" else PRETRAIN_STEPS + FINETUNE_STEPS
        s = train_ticks_autopilot(run_dir, lr, total_steps=total,
                                  after_drop_steps=FINETUNE_STEPS if arm == "autopilot-short" else None,
                                  autopilot="start_averaging" if arm == "averaging" else True, **common)
        out = {"trained": s["final"], "averaged": s["swa"], "steps": s["steps"],
               "dropped_at": s["acted"].get("drop_lr"), "averaging_from": s["acted"].get("start_averaging")}
    out.update(arm=arm, lr=lr, seed=seed, seconds=time.perf_counter() - started)
    (run_dir / "result.json").write_text(json.dumps(out))
    return out


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
    return mean, se


def _cell(values: list[float | None], spec: str) -> str:
    """Mean ± standard error of the seeds that have a value; "(k of n)" when some have none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    mean, se = _mean_se([float(v) for v in vals])
    cell = f"{mean:{spec}} ± {se:{spec}}" if len(vals) > 1 else f"{mean:{spec}}"
    return cell if len(vals) == len(values) else f"{cell} ({len(vals)} of {len(values)})"


def table(root: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/result.json"))]
    lines = ["| LR | recipe | steps | LR dropped at step | averaging from step | final train loss | test acc. (trained) | test acc. (averaged) |",
             "|---|---|---|---|---|---|---|---|"]
    for lr in sorted({r["lr"] for r in results}):
        for arm in ARMS:
            rows = [r for r in results if r["lr"] == lr and r["arm"] == arm]
            if not rows:
                continue
            avg = [r["averaged"]["test_acc"] if r["averaged"] else None for r in rows]
            lines.append(
                f"| {lr:g} | {arm} ({len(rows)} seeds) | {_cell([r['steps'] for r in rows], '.0f')} "
                f"| {_cell([r['dropped_at'] for r in rows], '.0f')} | {_cell([r['averaging_from'] for r in rows], '.0f')} "
                f"| {_cell([r['trained']['full_train_loss'] for r in rows], '.2e')} "
                f"| {_cell([r['trained']['test_acc'] for r in rows], '.4f')} | {_cell(avg, '.4f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the runs go")
    parser.add_argument("--table", action="store_true", help="only print the table of the recorded runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lrs", type=float, nargs="*", default=list(LRS))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    parser.add_argument("--skip-done", action="store_true", help="keep runs already recorded (with a result.json)")
    args = parser.parse_args(argv)
    if not args.table:
        jobs = [(arm, lr, seed, str(args.out)) for lr in args.lrs for seed in args.seeds for arm in args.arms]
        if args.skip_done:
            jobs = [j for j in jobs if not (args.out / j[0] / f"lr-{j[1]:.2e}-seed{j[2]}" / "result.json").is_file()]
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            for r in pool.imap_unordered(_record, jobs):
                print(f"  {r['arm']:<16} lr {r['lr']:g} seed {r['seed']}: {r['seconds']:.0f} s", flush=True)
        print(f"recorded in {time.perf_counter() - started:.0f} s", flush=True)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
