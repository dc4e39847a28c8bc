"""Record the validation corpus: `python -m validation.record [--out DIR] [--workers N] [--only PATH ...]`.

Each run is an ordinary training loop with the documented probe: ``probe.step(loss)`` once per
optimizer step (the mean loss over its micro-batches), ``probe.log(...)`` at each evaluation.
Beside it, without changing it, the loop takes the ground-truth measurements
(``validation.measure``) and writes them with their labels (``validation.truth``) to
``truth.json`` in the run directory. CPU, fixed seeds, ``torch.set_num_threads(1)`` per worker
process; the probe records at a fixed stride (``adaptive_stride=False``) so the steps logged do
not depend on the machine's speed (only when its sharpness estimates land does).
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

from validation.corpus import RunSpec, corpus

#: Where the committed corpus lives.
DEFAULT_OUT = Path(__file__).resolve().parent / "corpus"
#: Ground truth of a run, next to its meta.json and events.jsonl.
TRUTH_FILE = "truth.json"
#: Report points at these shares of the run (plus the end of warm-up and each LR step).
POINT_SHARES = (0.1, 0.25, 0.5, 0.75, 1.0)
#: Checkpoints (full-train evaluations) per run, evenly spaced, besides the report points
#: (full-batch runs: every step).
CHECKPOINTS = 50
#: User-style evaluations (``probe.log``) per run.
EVALUATIONS = 20
#: Non-finite losses a careful loop tolerates before it stops.
NON_FINITE_STOP = 3


def report_points(schedule: str, steps: int) -> tuple[dict[int, str], dict[int, int]]:
    """Report points {step: name} and, for each, where its LR phase began (see ``measure.horizon``)."""
    from validation.schedules import milestones, warmup_steps

    names: dict[int, list[str]] = {}
    for share in POINT_SHARES:
        names.setdefault(max(1, round(share * steps)), []).append(f"{share:.0%}")
    warm = warmup_steps(schedule, steps)
    if warm:
        names.setdefault(warm, []).append("end of warm-up")
    cuts = milestones(schedule, steps)
    for i, m in enumerate(cuts):
        names.setdefault(m, []).append(f"before LR step {i + 1}")
    starts = {t: max([0, *[m for m in cuts if m < t]]) for t in names}
    return {t: ", ".join(n) for t, n in sorted(names.items())}, starts


def record_run(spec: RunSpec, root: Path, measure: bool = True) -> dict[str, Any]:
    """Record one run under ``root / spec.path`` (replacing an old one); returns its summary."""
    import torch

    from probes import Probe
    from validation.measure import Measurements
    from validation.schedules import make_scheduler, phases
    from validation.truth import label_run
    from validation.workloads import make_workload, sharpness_at_init

    torch.manual_seed(spec.seed)
    run_dir = root / spec.path
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the writer appends to an existing run; start clean
    workload = make_workload(spec.task, spec.noisy_share, spec.seed)
    workload.accumulate, workload.clip = spec.accumulate, spec.clip
    if spec.lr is not None:
        lr = spec.lr
    elif spec.lr_times_sharpness is not None:
        lr = spec.lr_times_sharpness / sharpness_at_init(workload)
    else:
        raise ValueError(f"{spec.path}: neither lr nor lr_times_sharpness")
    model = workload.make_model()
    optimizer = workload.make_optimizer(spec.optimizer, model, lr)
    scheduler = make_scheduler(spec.schedule, optimizer, spec.steps)
    sampler = workload.sampler(spec.seed + 1)
    points, starts = report_points(spec.schedule, spec.steps)
    # full-batch GD: every step is a checkpoint (as cheap as the step), so a catapult is seen whole
    n_checkpoints = spec.steps if workload.batch_size >= len(workload.y_train) else CHECKPOINTS
    checkpoints = {round(i * spec.steps / n_checkpoints) for i in range(n_checkpoints + 1)}
    meas = Measurements(workload, spec.steps, checkpoints, points if measure else {}, starts, spec.seed)
    eval_every = max(1, spec.steps // EVALUATIONS)
    extra = {"validation": spec.describe(), "lr": lr, "task": spec.task}
    losses: list[float] = []
    hits = seen = 0.0
    non_finite = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    in_force = [g["lr"] for g in optimizer.param_groups]
    done = 0
    with Probe(model, optimizer, run_dir, loss_fn=workload.loss_fn, hessian_batch=workload.hessian_batch(),
               stride=spec.stride, adaptive_stride=False, extra=extra) as probe:
        for step in range(spec.steps):
            if measure:
                meas.at(step, model, optimizer, in_force)
            in_force = [g["lr"] for g in optimizer.param_groups]
            loss, out, y = workload.train_step(model, optimizer, sampler)
            if scheduler is not None:
                scheduler.step()
            if spec.loss_every and step % spec.loss_every:
                probe.step()
            else:
                probe.step(loss)
            done = step + 1
            value = float(loss)
            losses.append(value)
            hits += float(workload.correct(out, y))
            seen += len(y)
            if done % eval_every == 0:
                _log_evaluation(probe, workload, model, hits / max(seen, 1))
                hits = seen = 0.0
            if not math.isfinite(value):
                non_finite += 1
                if non_finite >= NON_FINITE_STOP:
                    break
        if measure:
            meas.at(done, model, optimizer, in_force,
                    force_point=None if done in points else f"end (stopped at step {done})")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if not measure:
        return {"path": spec.path, "seconds": seconds, "cpu_seconds": cpu_seconds, "losses": losses}
    phase_list = phases(spec.schedule, spec.steps)
    for p in meas.point_rows:
        p["phase"] = next((ph.name for ph in phase_list if ph.start <= p["step"] - 1 < ph.stop), phase_list[-1].name)
    truth: dict[str, Any] = {
        "spec": {"path": spec.path, **spec.describe()},
        "lr": lr,
        "steps_done": done,
        "phases": [{"name": ph.name, "start": ph.start, "stop": ph.stop} for ph in phase_list],
        "chance": workload.chance(),
        "checkpoints": meas.checkpoint_rows,
        "points": meas.point_rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    truth["labels"] = label_run(truth)
    (run_dir / TRUTH_FILE).write_text(json.dumps(truth, indent=1, default=_json_default, allow_nan=True) + "\n")
    return {"path": spec.path, "seconds": seconds, "cpu_seconds": cpu_seconds, "losses": losses,
            "regimes": [(p["name"], p["regime"]) for p in truth["labels"]["points"]]}


def _json_default(value: Any) -> Any:
    return float(value)


def _log_evaluation(probe: Any, workload: Any, model: Any, running_acc: float) -> None:
    """What a user's loop logs at an evaluation, by task: the paper's loop logs full-train loss
    and accuracy; the digits loops the running train accuracy and validation loss/accuracy; the
    LM and the regression a validation loss only."""
    if workload.kind == "binary":
        train_loss, train_acc = workload.evaluate(model)
        _, test_acc = workload.evaluate(model, "test")
        probe.log(full_train_loss=train_loss, train_acc=train_acc, test_acc=test_acc)
    elif workload.kind == "classes":
        val_loss, val_acc = workload.evaluate(model, "test")
        probe.log(train_acc=running_acc, val_loss=val_loss, val_acc=val_acc)
    else:
        val_loss, _ = workload.evaluate(model, "test")
        probe.log(val_loss=val_loss)


def _record(job: tuple[RunSpec, str]) -> dict[str, Any]:
    """Worker: one torch thread, one run."""
    import torch

    torch.set_num_threads(1)
    spec, root = job
    return record_run(spec, Path(root))


def record_all(specs: list[RunSpec], root: Path, workers: int) -> tuple[float, float]:
    """Record ``specs`` under ``root`` with ``workers`` processes; returns (wall, summed CPU) seconds.

    CPU seconds are the runs' own process time (start-up excluded): divided by the number of
    cores they say how long the recording takes on an otherwise idle machine."""
    started = time.perf_counter()
    jobs = [(s, str(root)) for s in specs]
    cpu = 0.0
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(_record, jobs):
            cpu += r["cpu_seconds"]
            print(f"  {r['path']:<62} {r['seconds']:6.1f} s wall {r['cpu_seconds']:6.1f} s CPU", flush=True)
    return time.perf_counter() - started, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.record", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus root (default: validation/corpus)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each (default 2)")
    parser.add_argument("--only", nargs="+", metavar="PATH", help="record only these runs (paths or prefixes)")
    parser.add_argument("--scale", type=float, default=1.0, help="run lengths times this (a quick look; not the corpus)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    args = parser.parse_args(argv)
    specs = corpus()
    if args.only:
        specs = [s for s in specs if any(s.path == o or s.path.startswith(o.rstrip("/") + "/") or
                                         s.path.startswith(o) for o in args.only)]
        if not specs:
            print(f"validation.record: no run matches {' '.join(args.only)}", file=sys.stderr)
            return 2
    if args.scale != 1.0:
        if args.scale <= 0:
            print("validation.record: --scale must be positive", file=sys.stderr)
            return 2
        specs = [s.scaled(args.scale) for s in specs]
    if args.list:
        for s in specs:
            print(f"{s.path:<62} {s.steps:>6} steps  cases {list(s.cases)}")
        return 0
    if args.workers < 1:
        print("validation.record: --workers must be at least 1", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    seconds, cpu = record_all(specs, args.out, args.workers)
    print(f"recorded {len(specs)} runs in {seconds:.0f} s with {args.workers} workers "
          f"({cpu:.0f} s CPU in the runs)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
