"""The advisor on the recorded sample runs: each verdict against the ground truth taken from the run itself.

Ground truth, from each run's own logged numbers (never from the advisor): ``diverged`` when a
logged loss is not finite; else ``converged`` when the last pre-training full-train loss is below
1e-2 (the paper's test); else ``falling`` when the full-train loss is still falling at the end: the
least-squares slope of its logarithm over the last half of the pre-training evaluations is
negative with a t statistic below -3 (a run that did not reach 1e-2 within a short budget, such as
the catapult run or full-batch training at the edge of stability, whose loss falls with upticks);
else ``chance`` when the train accuracy stayed at chance, by the rule the recorder labels the sweep
with (``probes.tasks.training.stayed_at_chance``: every evaluation of the last quarter of the
pre-training below 0.6, on balanced binary labels where chance is 0.5); else ``equilibrium``.

An earlier version called a run ``falling`` only when its full-train loss fell over each of the
last three evaluation intervals; that made momentum-cnn (-17% over its last seven evaluations, one
uptick of 0.6% at the very end; t = -7.6) an ``equilibrium``. The slope test changes no other run:
the stationary runs have t between -1.7 and +0.7, the falling ones -6.2 and below.
Until 2026-11-29 this test had a chance rule of its own, the *mean* of that quarter below 0.6,
which disagreed with the recorder's label on lr 4.33e-2 (accuracies 0.56, 0.52, 0.66, 0.65, 0.51:
mean 0.58, but two of the five far above chance) and counted a miss there. One rule now, the
recorder's: see docs/validation.md, "The recorded sample runs", for why.
``python tests/test_advisor_samples.py`` prints the confusion table that is in docs/validation.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from lrtui.advisor import Advisor, analyze_sweep
from lrtui.runlog import find_runs, load_run
from probes.tasks.training import stayed_at_chance

#: The recorded sample runs (LRTUI_SAMPLES names another recording made with make_samples.py --out).
SAMPLES = Path(os.environ.get("LRTUI_SAMPLES") or Path(__file__).resolve().parent.parent / "sample_runs")
#: Ground truth -> the advisor's name for that regime.
VERDICT_NAME = {"converged": "converging", "falling": "converging", "equilibrium": "equilibrium",
                "chance": "chance", "diverged": "diverged"}


def sample_dirs() -> list[Path]:
    """Every recorded sample run: the sweep's runs and the single runs."""
    if not SAMPLES.is_dir():
        return []
    out = [p for p in find_runs(SAMPLES) if p != SAMPLES]
    if (SAMPLES / "sweep").is_dir():
        out += find_runs(SAMPLES / "sweep")
    return sorted(out)


def ground_truth(run) -> str:
    """The run's regime from its own logged numbers (see the module docstring)."""
    loss = run.table("step").get("loss", np.array([]))
    if len(loss) and not np.isfinite(loss).all():
        return "diverged"
    pre = [r for r in run.records("metric") if r.get("phase") == "pretrain" and "full_train_loss" in r]
    if not pre:  # a run with one phase only: its last evaluation
        pre = [r for r in run.records("metric") if "full_train_loss" in r and r.get("phase") != "swa"]
    if pre and pre[-1]["full_train_loss"] < 1e-2:
        return "converged"
    by_step = {r.get("step"): r["full_train_loss"] for r in pre}  # one value per evaluation step
    steps = sorted(k for k in by_step if k is not None)
    if falling_t(steps, [by_step[k] for k in steps]) < FALLING_T:
        return "falling"
    if stayed_at_chance([r["train_acc"] for r in pre if isinstance(r.get("train_acc"), (int, float))]):
        return "chance"
    return "equilibrium"


#: A full-train loss is still falling when its log has a least-squares slope with t below this.
FALLING_T = -3.0


def falling_t(steps: list[int], losses: list[float]) -> float:
    """t statistic of the slope of log(loss) against step over the last half of the evaluations
    (+inf when there are fewer than four, or a loss is not positive: no evidence of a fall)."""
    half = len(steps) // 2
    x, y = np.asarray(steps[half:], dtype=float), np.asarray(losses[half:], dtype=float)
    if len(x) < 4 or not (y > 0).all() or np.ptp(x) == 0:
        return np.inf
    x, y = x - x.mean(), np.log(y) - np.log(y).mean()
    slope = (x @ y) / (x @ x)
    residual = y - slope * x
    se = np.sqrt((residual @ residual) / (len(x) - 2) / (x @ x))
    return slope / se if se > 0 else (-np.inf if slope < 0 else np.inf)


def verdict(run) -> tuple[str, Advisor]:
    """The advisor's regime of the pre-training (first) segment, or ``diverged``."""
    adv = Advisor.from_run(run)
    st = adv.state()
    if st.diverged_at_step is not None:
        return "diverged", adv
    first = st.segments[0] if st.segments else None
    if first is None:
        return "warmup", adv
    if first.converged_by is not None:
        return "converging", adv
    return first.regime, adv


def confusion() -> tuple[list[tuple[str, str, str]], dict[tuple[str, str], int]]:
    rows, table = [], {}
    for path in sample_dirs():
        run = load_run(path)
        truth, (got, _) = ground_truth(run), verdict(run)
        rows.append((str(path.relative_to(SAMPLES)), truth, got))
        table[(truth, got)] = table.get((truth, got), 0) + 1
    return rows, table


def confusion_markdown() -> str:
    rows, table = confusion()
    cols = ["converging", "equilibrium", "chance", "diverged", "warmup"]
    lines = ["| ground truth \\ advisor | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for truth in ("converged", "falling", "equilibrium", "chance", "diverged"):
        lines.append(f"| {truth} | " + " | ".join(str(table.get((truth, c), 0)) for c in cols) + " |")
    lines.append("")
    lines.append("| run | ground truth | advisor |")
    lines.append("|---|---|---|")
    lines += [f"| {name} | {truth} | {got} |" for name, truth, got in rows]
    return "\n".join(lines)


RUNS = sample_dirs()


def test_samples_are_recorded():
    assert len(RUNS) >= 10, f"no sample runs under {SAMPLES}"


@pytest.mark.parametrize("path", RUNS, ids=[p.name for p in RUNS])
def test_regime_is_the_ground_truth(path):
    run = load_run(path)
    truth, (got, _) = ground_truth(run), verdict(run)
    assert got == VERDICT_NAME[truth], f"{path.name}: ground truth {truth}, advisor {got}"


@pytest.mark.parametrize("path", RUNS, ids=[p.name for p in RUNS])
def test_divergence_flagged_near_first_non_finite_loss_and_never_on_stable_runs(path):
    run = load_run(path)
    steps = run.table("step")
    loss = steps.get("loss", np.array([]))
    st = Advisor.from_run(run).state()
    bad = np.flatnonzero(~np.isfinite(loss))
    if not len(bad):
        assert st.diverged_at_step is None, f"false alarm: {st.divergence_reason} at {st.diverged_at_step}"
        return
    logged = steps["step"].astype(int)
    first_bad = int(bad[0])
    flagged = int(np.searchsorted(logged, st.divergence_flagged_at_step))
    assert flagged <= first_bad + 5
    assert st.diverged_at_step <= logged[first_bad]


def test_sweep_threshold_band_and_winner():
    runs = find_runs(SAMPLES / "sweep")
    assert len(runs) >= 10
    loaded = [load_run(p) for p in runs]
    result = analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in loaded])
    # the threshold estimate sits between runs that did and did not converge, by their own truth
    truths = {r.name: ground_truth(r) for r in loaded}
    lr_of = {r.name: r.meta["optimizer"]["param_groups"][0]["lr"] for r in loaded}
    conv = [lr_of[n] for n, t in truths.items() if t == "converged"]
    above = [lr_of[n] for n, t in truths.items() if t != "converged" and lr_of[n] > max(conv)]
    assert result.threshold_interval == (pytest.approx(max(conv)), pytest.approx(min(above)))
    lo, hi = result.recommended_initial_lr
    assert result.threshold_interval[0] < lo < hi  # slightly above the threshold
    # the winner is read from the runs' own last finetune/swa test accuracy
    for phase in ("finetune", "swa"):
        accs = {r.name: [m["test_acc"] for m in r.records("metric") if m.get("phase") == phase
                         and isinstance(m.get("test_acc"), float)] for r in loaded}
        name = max((n for n in accs if accs[n]), key=lambda n: accs[n][-1])
        assert result.best[phase]["run"] == name and result.best[phase]["lr"] == lr_of[name]
        assert result.winner_in_band(phase) == (lo <= lr_of[name] <= hi)
    # the human output's note names exactly the phases whose winner the band missed
    from lrtui.advise import describe_sweep

    notes = [line for line in describe_sweep(result) if line.startswith("note: in this sweep")]
    missed = [p for p in ("finetune", "swa") if result.winner_in_band(p) is False]
    assert len(notes) == (1 if missed else 0)
    assert all(f"after {' or '.join(missed)};" in line for line in notes)


if __name__ == "__main__":
    print(confusion_markdown())
    sys.exit(0)
