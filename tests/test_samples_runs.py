"""The committed sample runs load, carry ground truth consistent with their own metrics, and the
docs/sample-runs.md shows the tables make_samples.py prints from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from lrtui.runlog import find_runs, load_run
from probes.tasks.training import ground_truth_regime

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runs"


def _make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _last(run, phase: str) -> dict:
    found = {}
    for record in run.records("metric"):
        if record.get("phase") == phase and "full_train_loss" in record:
            found = record
    return found


def test_sweep_runs_ground_truth_matches_their_metrics() -> None:
    runs = find_runs(SAMPLES / "sweep")
    assert len(runs) >= 10
    regimes = set()
    for path in runs:
        run = load_run(path)
        assert run.status() == "finished" and run.skipped_lines == 0
        regime = run.meta["extra"]["ground_truth_regime"]
        regimes.add(regime)
        pre = _last(run, "pretrain")
        if regime == "converged":
            assert pre["full_train_loss"] < 1e-2
        else:
            assert pre["full_train_loss"] >= 1e-2
        # the label the recorder wrote is its rule applied to the run's own logged evaluations
        accs = [r["train_acc"] for r in run.records("metric")
                if r.get("phase") == "pretrain" and "train_acc" in r]
        assert len(accs) >= 8
        assert regime == ground_truth_regime(pre["full_train_loss"], accs), run.name
        for phase in ("finetune", "swa"):
            assert "test_acc" in _last(run, phase)
        lrs = run.table("step")["lr"][:, 0]
        assert np.isclose(lrs[0], run.meta["extra"]["lr"])  # pre-training LR, then the fine-tuning LR
        assert np.isclose(lrs[-1], run.meta["extra"]["finetune_lr"])
        assert len(run.table("sharpness").get("value", [])) > 0
    assert "converged" in regimes and "chaotic_equilibrium" in regimes


def test_diverging_run_has_a_non_finite_loss_and_stops_soon_after() -> None:
    run = load_run(SAMPLES / "diverging")
    steps = run.table("step")
    bad = np.flatnonzero(~np.isfinite(steps["loss"]))
    assert len(bad) > 0
    assert steps["step"][-1] - steps["step"][bad[0]] < 10
    assert run.meta["extra"]["ground_truth_regime"] == "diverged"


def test_catapult_spikes_then_recovers() -> None:
    run = load_run(SAMPLES / "catapult")
    extra = run.meta["extra"]
    assert 2 < extra["lr"] * extra["sharpness_at_init"] < 4
    loss = run.table("step")["loss"]
    peak = int(np.argmax(loss))
    assert loss[peak] > 2 * loss[0] and loss[-1] < loss[0]


def test_other_runs_load() -> None:
    for name in ("momentum-cnn", "adam-cnn", "ddp"):
        run = load_run(SAMPLES / name)
        assert run.status() == "finished"
        assert len(run.table("step")["loss"]) > 100
    assert load_run(SAMPLES / "ddp").meta["world_size"] == 2


def test_doc_tables_come_from_make_samples() -> None:
    module = _make_samples()
    doc = (ROOT / "docs" / "sample-runs.md").read_text()
    for text in (module.sweep_table(SAMPLES), module.other_table(SAMPLES)):
        assert text in doc
