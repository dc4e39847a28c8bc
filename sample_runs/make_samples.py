"""Record the sample runs with the probe attached and print their table: `python sample_runs/make_samples.py`.

Everything runs on CPU with fixed seeds, two runs at a time in worker processes with one torch
thread each. ``--table`` only prints the table (and the reproduction summary) from the runs
already recorded, using ``lrtui.runlog.load_run``: the numbers in docs/sample-runs.md come from this command.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root, so `probes` imports without installing

from lrtui.runlog import find_runs, load_run  # noqa: E402
from lrtui.runlog.format import META_FILE, encode_json, read_meta  # noqa: E402

#: The sweep of the paper's synthetic experiment: 12 LRs log-spaced over 1e-3 .. 1e-1.
SWEEP_LRS = [float(f"{lr:.3g}") for lr in np.logspace(-3, -1, 12)]
PRETRAIN_STEPS = 10_000
FINETUNE_STEPS = 5_000
FINETUNE_LR = 1e-3
AVERAGE_LAST = 2_000
AVERAGE_EVERY = 100
SWEEP_STRIDE = 8
#: The sweep's tick features: the geometry of the authors' released generator (``"ours"``, our
#: earlier reconstruction from the paper's text, puts the convergence threshold 3x too high).
SWEEP_GEOMETRY = "authors"
#: ``--paper-schedule``: the sweep at the paper's length (not committed; docs/sample-runs.md says what it
#: showed).
PAPER_SCHEDULE = {"pretrain_steps": 40_000, "finetune_steps": 20_000, "average_last": 8_000,
                  "average_every": 400, "stride": 32}
#: The autopilot sample run: ``Probe(autopilot=True)`` at an LR inside the band ``lrtui advise
#: sample_runs/sweep`` recommends, constant, as long as a sweep run (docs/control.md).
AUTOPILOT_LR = 1.23e-2
#: The paper's regime boundaries for its synthetic MLP (1->2, 2A/2B, 2->3).
PAPER_BOUNDARIES = (7.5e-3, 1.78e-2, 5.6e-2)


def sweep_name(lr: float) -> str:
    """Directory name of one sweep run, e.g. ``lr-1.87e-02`` (sorts by LR)."""
    return f"lr-{lr:.2e}"


def _jobs(schedule: dict[str, Any] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(run directory relative to sample_runs, recipe, keyword arguments), longest first.

    ``schedule`` replaces the sweep's step counts (see ``PAPER_SCHEDULE``) or other arguments
    of its runs (``geometry``)."""
    jobs: list[tuple[str, str, dict[str, Any]]] = [
        ("momentum-cnn", "digits", {"optimizer_name": "momentum", "lr": 0.2, "steps": 1500}),
        ("adam-cnn", "digits", {"optimizer_name": "adam", "lr": 2e-3, "steps": 1500}),
    ]
    for lr in SWEEP_LRS:
        jobs.append((f"sweep/{sweep_name(lr)}", "ticks", {
            "lr": lr, "pretrain_steps": PRETRAIN_STEPS, "finetune_steps": FINETUNE_STEPS,
            "finetune_lr": FINETUNE_LR, "average_last": AVERAGE_LAST,
            "average_every": AVERAGE_EVERY, "stride": SWEEP_STRIDE, "geometry": SWEEP_GEOMETRY,
            **(schedule or {})}))
    jobs += [("catapult", "catapult", {}), ("diverging", "diverging", {})]
    jobs.append(("autopilot", "ticks-autopilot", {
        "lr": AUTOPILOT_LR, "total_steps": PRETRAIN_STEPS + FINETUNE_STEPS, "stride": SWEEP_STRIDE,
        "geometry": SWEEP_GEOMETRY}))
    return jobs


def _record(job: tuple[str, str, dict[str, Any]], root: str) -> tuple[str, float, dict[str, Any]]:
    """Run one recipe in this (worker) process; returns (name, seconds, summary)."""
    import torch

    torch.set_num_threads(1)
    from probes.tasks import autopilot, ddp, training

    recipes: dict[str, Callable[..., dict[str, Any]]] = {
        "ticks": training.train_ticks, "catapult": training.train_catapult,
        "diverging": training.train_diverging, "digits": training.train_digits,
        "ddp": ddp.train_ddp, "ticks-autopilot": autopilot.train_ticks_autopilot,
    }
    name, recipe, kwargs = job
    run_dir = Path(root) / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the writer appends to an existing run; start clean
    started = time.perf_counter()
    summary = recipes[recipe](run_dir, **kwargs)
    if "regime" in summary:
        annotate_ground_truth(run_dir, summary["regime"])
    return name, time.perf_counter() - started, summary


def annotate_ground_truth(run_dir: Path, regime: str) -> None:
    """Add the regime the finished run reached to ``meta.json`` "extra" (atomic replace).

    The regime is known only at the end of pre-training (it is also logged there as a metric), so
    the recording script adds it to the metadata after the run, for readers that compare the
    advisor's verdict with the truth.
    """
    meta = read_meta(run_dir)
    meta.setdefault("extra", {})["ground_truth_regime"] = regime
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_bytes(encode_json(meta))
    os.replace(tmp, run_dir / META_FILE)


def record_all(root: Path, only: list[str] | None, workers: int, schedule: dict[str, Any] | None = None) -> None:
    """Record every sample run (or those named in ``only``) under ``root``."""
    jobs = [j for j in _jobs(schedule) if not only or j[0] in only or j[0].split("/")[0] in only]
    with_ddp = not only or "ddp" in only
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        pending = [pool.apply_async(_record, (job, str(root))) for job in jobs]
        for result in pending:
            name, seconds, _ = result.get()
            print(f"  recorded {name:<22} {seconds:6.1f} s", flush=True)
    if with_ddp:  # two processes of its own: run it alone
        name, seconds, _ = _record(("ddp", "ddp", {}), str(root))
        print(f"  recorded {name:<22} {seconds:6.1f} s", flush=True)
    print(f"recorded in {time.perf_counter() - started:.0f} s", flush=True)


# -- the table, from the recorded runs --------------------------------------------------------

def _phase_metrics(run: Any, phase: str) -> dict[str, float]:
    """The last metric record of ``phase`` that carries a test accuracy."""
    found: dict[str, float] = {}
    for record in run.records("metric"):
        if record.get("phase") == phase and "test_acc" in record:
            found = record
    return found


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def sweep_rows(root: Path) -> list[dict[str, Any]]:
    """One row per sweep run: LR, regime and the numbers after each phase."""
    rows = []
    for path in find_runs(root / "sweep"):
        run = load_run(path)
        extra = run.meta.get("extra", {})
        pre, fine, swa = (_phase_metrics(run, p) for p in ("pretrain", "finetune", "swa"))
        rows.append({
            "name": run.name, "lr": extra.get("lr"), "regime": extra.get("ground_truth_regime"),
            "train_loss": pre.get("full_train_loss"), "pre_acc": pre.get("test_acc"),
            "ft_acc": fine.get("test_acc"), "swa_acc": swa.get("test_acc"),
            "ft_loss": fine.get("full_train_loss"),
        })
    rows.sort(key=lambda r: r["lr"])
    return rows


def sweep_table(root: Path) -> str:
    """The sweep as a Markdown table (the table in docs/sample-runs.md)."""
    lines = [
        "| run | LR | ground-truth regime | final train loss (pre-training) | test acc. pre-trained | fine-tuned | averaged |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sweep_rows(root):
        lines.append(
            f"| {r['name']} | {_fmt(r['lr'], '.3g')} | {r['regime']} | {_fmt(r['train_loss'], '.2e')} "
            f"| {_fmt(r['pre_acc'], '.4f')} | {_fmt(r['ft_acc'], '.4f')} | {_fmt(r['swa_acc'], '.4f')} |"
        )
    return "\n".join(lines)


def other_table(root: Path) -> str:
    """The other sample runs as a Markdown table: what each shows, read from its own events."""
    lines = [
        "| run | optimizer | LR | ground-truth regime | final train loss | test acc. | what the recording shows |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("diverging", "catapult", "momentum-cnn", "adam-cnn", "ddp", "autopilot"):
        path = root / name
        if not (path / META_FILE).exists():
            continue
        run = load_run(path)
        extra = run.meta.get("extra", {})
        steps = run.table("step")
        loss = steps.get("loss", np.array([]))
        pre = _phase_metrics(run, "finetune" if name == "autopilot" else "pretrain")
        regime = extra.get("ground_truth_regime") or "—"
        final_loss = float(loss[-1]) if len(loss) else float("nan")
        lines.append(
            f"| {name} | {extra.get('optimizer', '—')} | {_fmt(extra.get('lr'), '.3g')} | {regime} "
            f"| {_fmt(final_loss, '.3g')} | {_fmt(pre.get('test_acc'), '.4f')} | {_what_it_shows(name, run)} |"
        )
    return "\n".join(lines)


def _what_it_shows(name: str, run: Any) -> str:
    extra = run.meta.get("extra", {})
    steps = run.table("step")
    loss = steps.get("loss", np.array([]))
    sharp = run.table("sharpness")
    values = sharp.get("value", np.array([]))
    if len(values):  # the threshold applies to λ_max(H) (GD, momentum) or λ_max(P⁻¹H) (Adam)
        method = "preconditioned" if extra.get("optimizer") == "adam" else "hessian"
        values = values[sharp["method"] == method]
    if name == "diverging":
        bad = np.flatnonzero(~np.isfinite(loss))
        first = int(steps["step"][bad[0]]) if len(bad) else None
        return (f"first non-finite loss at step {first}, last logged step {int(steps['step'][-1])}"
                if first is not None else "no non-finite loss recorded")
    if name == "catapult":
        lr = extra["lr"]
        peak = int(np.nanargmax(loss))
        end_sharp = float(values[-1]) if len(values) else float("nan")
        return (f"λ0 = {extra['sharpness_at_init']:.3g}, η·λ0 = {lr * extra['sharpness_at_init']:.2f}; "
                f"loss {loss[0]:.3g} → peak {loss[peak]:.3g} at step {int(steps['step'][peak])} → "
                f"{loss[-1]:.3g}; sharpness at end {end_sharp:.3g} (2/η = {2 / lr:.3g})")
    if name in ("momentum-cnn", "adam-cnn"):
        threshold = extra.get("expected_stability_threshold", float("nan"))
        if not len(values):
            return "no sharpness measured"
        first = values[0]
        top = float(np.nanmax(values))
        late = values[len(values) * 3 // 4:]
        return (f"sharpness {first:.3g} → max {top:.3g}, last quarter median {np.nanmedian(late):.3g} "
                f"({len(values)} estimates); threshold {threshold:.3g} "
                f"({'reached' if top >= 0.9 * threshold else 'not reached'})")
    if name == "autopilot":
        acts = {a["action"]: a for a in run.records("action")}
        avg, drop = acts.get("start_averaging"), acts.get("drop_lr")
        if avg is None or drop is None:
            return "the autopilot did not act"
        swa = _phase_metrics(run, "swa")
        return (f"advisor's equilibrium at step {avg['recommendation_step']}: SWA from step {avg['step']}, "
                f"LR {drop['lr_before'][0]:.3g} → {drop['lr_after'][0]:.3g} at step {drop['step']} "
                f"({drop.get('averaging_stopped')} checkpoints averaged, test acc. {_fmt(swa.get('test_acc'), '.4f')})")
    if name == "ddp":
        return f"world size {run.meta.get('world_size')}, {len(loss)} step events, {len(values)} sharpness estimates"
    return ""


def reproduction_summary(root: Path) -> str:
    """Where the measured regime boundaries lie and where the best second-phase accuracy is."""
    rows = sweep_rows(root)
    if not rows:
        return "no sweep recorded"
    converged = [r["lr"] for r in rows if r["regime"] == "converged"]
    chaotic = [r["lr"] for r in rows if r["regime"] == "chaotic_equilibrium"]
    walk = [r["lr"] for r in rows if r["regime"] == "random_walk"]
    out = []
    if converged and (chaotic or walk):
        above = min(chaotic + walk)
        out.append(f"convergence threshold (1→2): between {max(converged):.3g} and {above:.3g} "
                   f"(paper {PAPER_BOUNDARIES[0]:.3g})")
    if chaotic and walk:
        out.append(f"2→3 boundary: between {max(chaotic):.3g} and {min(walk):.3g} "
                   f"(paper {PAPER_BOUNDARIES[2]:.3g})")
    for key, label in (("ft_acc", "fine-tuned"), ("swa_acc", "averaged"), ("pre_acc", "pre-trained")):
        valid = [r for r in rows if r[key] is not None and not math.isnan(r[key])]
        if valid:
            best = max(valid, key=lambda r: r[key])
            out.append(f"best {label} test accuracy {best[key]:.4f} at LR {best['lr']:.3g} ({best['regime']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="only print the table of the recorded runs")
    parser.add_argument("--out", type=Path, default=HERE, help="where the runs go (default: sample_runs/)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="record only these runs (e.g. catapult sweep ddp)")
    parser.add_argument("--workers", type=int, default=2, help="runs recorded at a time (default 2)")
    parser.add_argument("--paper-schedule", action="store_true",
                        help="the sweep at the paper's 40k pre-training / 20k fine-tuning steps (use with --out)")
    parser.add_argument("--geometry", choices=["ours", "authors"], default=SWEEP_GEOMETRY,
                        help=f"the sweep's tick features (default {SWEEP_GEOMETRY}, as committed; ours: our earlier reconstruction, use with --out)")
    args = parser.parse_args(argv)
    if not args.table:
        schedule = dict(PAPER_SCHEDULE) if args.paper_schedule else {}
        if args.geometry != SWEEP_GEOMETRY:
            schedule["geometry"] = args.geometry
        record_all(args.out, args.only, args.workers, schedule or None)
    print()
    print(sweep_table(args.out))
    print()
    print(reproduction_summary(args.out))
    print()
    print(other_table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
