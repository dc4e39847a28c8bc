"""The seven cases of issue 18, each on a run recorded by real training through ``Probe`` (tests/advisor_cases.py).

Each of these failed on the advisor before the issue was fixed (checked once against it).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import advisor_cases as cases
from lrtui.advisor import Advisor, analyze_sweep
from lrtui.advisor.regime import ANNEALED
from lrtui.runlog import RunFollower, load_run, planned_lr
from probes.tasks.training import train_catapult


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """Every run of the seven cases, recorded once for the session."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cases")
    runs = {
        "warmup_cosine": lambda p: cases.train_digits_mlp(p, optimizer="adamw", lr=3e-3, steps=1500,
                                                          schedule="warmup_cosine", warmup=150),
        "onecycle": lambda p: cases.train_digits_mlp(p, optimizer="adamw", lr=3e-3, steps=1500, schedule="onecycle"),
        "cosine": lambda p: cases.train_digits_mlp(p, optimizer="momentum", lr=0.05, steps=1500, schedule="cosine"),
        "char_gru": lambda p: cases.train_char_gru(p),
        "slow_sgd": lambda p: cases.train_digits_mlp(p, optimizer="sgd", lr=0.01, steps=2000),
        "noisy_labels": lambda p: cases.train_digits_mlp(p, optimizer="sgd", lr=0.1, steps=4000, noisy_fraction=0.4,
                                                         hidden=64, eval_every=250),
        "ticks_chance": lambda p: cases.train_ticks_large_lr(p, lr=0.07, steps=1500, seed=1),
        "null_loss": lambda p: cases.train_digits_mlp(p, optimizer="sgd", lr=0.05, steps=600,
                                                      log_loss=lambda step: step % 3 != 1),
        "catapult": lambda p: train_catapult(p, lr_times_sharpness=3.3, steps=300),
    }
    for lr in (0.2, 0.6, 1.8):
        runs[f"sweep/lr{lr:g}"] = functools.partial(
            cases.train_digits_mlp, optimizer="sgd", lr=lr, steps=1500, batch=64, eval_every=100)
    # The Hugging Face default schedule: the LR starts at 0, rises for 100 steps, then falls to 0.
    runs["warmup_from_zero"] = functools.partial(cases.train_digits_mlp, optimizer="adamw", lr=0.01, steps=1000,
                                                 schedule="warmup_linear", warmup=100, hidden=64)
    for lr in (0.1, 0.3, 1.0):
        runs[f"sweep_warmup/lr{lr:g}"] = functools.partial(
            cases.train_digits_mlp, optimizer="momentum", lr=lr, steps=1000, schedule="warmup_linear",
            warmup=100, hidden=64)
    truth = {name: record(root / name) for name, record in runs.items()}
    (root / "truth.json").write_text(json.dumps({k: v for k, v in truth.items() if v is not None}))
    return root


def states(root, name):
    run = load_run(root / name)
    return run, Advisor.from_run(run).state()


def given(st, action):
    """Every recommendation of ``action`` the advisor ever gave: in force, withdrawn or done."""
    return ([r for r in st.recommendations if r.action == action]
            + [w.recommendation for w in st.withdrawn if w.recommendation.action == action]
            + [d.recommendation for d in st.done if d.recommendation.action == action])


@pytest.mark.parametrize("name", ["warmup_cosine", "onecycle", "cosine", "char_gru"])
def test_1_scheduled_lr_is_judged_in_phases_with_real_regimes(recorded, name):
    run, st = states(recorded, name)
    assert st.regime in ("converging", "equilibrium", "chance", "diverged") and not st.in_warmup
    assert len(st.segments) <= 2, [(s.start_step, s.lr, s.regime) for s in st.segments]
    assert st.segments[-1].regime != "warmup"
    if name in ("warmup_cosine", "onecycle"):  # the LR rose first: the phase says where its warm-up ended
        assert st.segments[0].warmup_end_step is not None and st.segments[0].warmup_end_step > 0
    if st.regime == "equilibrium" and st.segments[-1].change_interval is not None:
        lo, hi = st.segments[-1].change_interval
        seg = st.segments[-1]
        table = run.table("step")
        judged_from = seg.warmup_end_step if seg.warmup_end_step is not None else seg.start_step
        lr_begin = float(table["lr"][int(np.searchsorted(table["step"], judged_from)), 0])
        annealed = seg.lr_end <= ANNEALED * lr_begin  # the schedule made the x0.1 drop itself
        if -0.1 < lo and hi < 0.1 and not annealed:  # stationary at the LR in force: the advice of a constant LR
            assert given(st, "drop_lr") and given(st, "start_averaging")
        if annealed:  # a further x0.1 at an annealed end does not pay (docs/validation.md): not advised
            assert not given(st, "drop_lr") and not given(st, "start_averaging")


def test_1_gradient_accumulation_counts_optimizer_steps(recorded):
    run, st = states(recorded, "char_gru")
    assert st.logged_steps == 400 and st.step == 399  # one probe.step per optimizer step, 2 micro-batches each


def test_2_a_slow_steady_decline_is_never_chance_and_leaves_nothing_stale(recorded):
    run, st = states(recorded, "slow_sgd")
    loss = run.table("step")["loss"]
    assert loss[:50].mean() > 2.5 * loss[-200:].mean()  # the recording: a 2.5x+ fall over 2,000 steps
    assert st.regime == "converging"
    assert not any(a.message.startswith("regime chance") for a in st.alerts)
    assert not given(st, "lower_lr") and not given(st, "rollback")
    assert {r.action for r in st.recommendations} <= {"raise_lr"}


def test_3_noisy_labels_get_no_premature_drop_lr(recorded):
    run, st = states(recorded, "noisy_labels")
    steps, loss = run.table("step")["step"], run.table("step")["loss"]
    final = loss[-400:].mean()
    for drop in given(st, "drop_lr"):  # a drop only where the loss had less than 10% left to fall
        at = np.searchsorted(steps, drop.step)
        level = loss[max(0, at - 200):at + 1].mean()
        assert (level - final) / level < 0.1, (drop.step, level, final)


def test_4_accuracy_at_chance_is_chance_not_equilibrium(recorded):
    run, st = states(recorded, "ticks_chance")
    accs = [m["train_acc"] for m in run.records("metric")]
    assert max(accs) < 0.55  # the recording: train_acc stays at 0.47-0.53
    assert st.regime == "chance"
    assert not any(r.action in ("drop_lr", "start_averaging") for r in st.recommendations)
    assert not any(a.message.startswith("regime equilibrium") for a in st.alerts)


def test_5_the_sweep_band_stops_below_the_failed_lr(recorded):
    loaded = [load_run(recorded / "sweep" / f"lr{lr:g}") for lr in (0.2, 0.6, 1.8)]
    result = analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in loaded])
    assert result.threshold_interval == (0.6, 1.8)
    failed = next(r for r in result.runs if r.initial_lr == 1.8)
    assert failed.pretrain_regime in ("chance", "diverged")
    lo, hi = result.recommended_initial_lr
    assert lo < hi <= 1.8 and result.capped_by["run"] == "lr1.8" and result.capped_by["step"] is not None
    js = json.loads(json.dumps(result.to_json()))
    assert js["recommended_initial_lr_capped_by"]["lr"] == 1.8


def test_a_warmup_from_zero_is_judged_at_the_lr_it_rose_to(recorded):
    """A run's initial LR is the LR its schedule rose to, not its warm-up's first value (0 under
    the Hugging Face default): raise_lr said "at lr 0: try 0 in the next run"."""
    run, st = states(recorded, "warmup_from_zero")
    lrs = run.table("step")["lr"][:, 0]
    assert lrs[0] == 0 and lrs.max() == pytest.approx(0.01)  # the recording
    assert json.loads((recorded / "truth.json").read_text())["warmup_from_zero"]["full_train_loss"] < 1e-2
    first = st.segments[0]
    assert first.lr == 0 and first.peak_lr == pytest.approx(0.01)
    raised = given(st, "raise_lr")
    assert raised and all(r.numbers["current_lr"] == pytest.approx(0.01) for r in raised)
    assert all(r.numbers["new_lr"] > 0.01 and "at lr 0.01:" in r.reason for r in raised)
    assert planned_lr(run.meta) == pytest.approx(0.01)  # what the runs table shows


def test_a_sweep_of_warmup_runs_is_indexed_by_their_peak_lrs(recorded):
    """Ground truth from the recording: pre-training converged where the full-train loss at the
    end is under 1e-2; the threshold lies between the largest such LR and the next one."""
    truth = json.loads((recorded / "truth.json").read_text())
    lrs = (0.1, 0.3, 1.0)
    converged = [lr for lr in lrs if truth[f"sweep_warmup/lr{lr:g}"]["full_train_loss"] < 1e-2]
    assert converged and converged[-1] < lrs[-1]  # the recording brackets the threshold
    expected = (converged[-1], lrs[lrs.index(converged[-1]) + 1])
    loaded = [load_run(recorded / "sweep_warmup" / f"lr{lr:g}") for lr in lrs]
    result = analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in loaded])
    assert sorted(r.initial_lr for r in result.runs) == pytest.approx(list(lrs))
    assert result.threshold_interval == pytest.approx(expected)
    # the band lies above the threshold and below the smallest LR that stayed at chance (10 classes)
    failed = min(lr for lr in lrs if truth[f"sweep_warmup/lr{lr:g}"]["train_acc"] < 0.2)
    lo, hi = result.recommended_initial_lr
    assert expected[0] < lo < hi <= failed


def test_6_a_null_loss_is_no_value_not_divergence(recorded):
    path = recorded / "null_loss"
    lines = [json.loads(x) for x in (path / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in lines if e["kind"] == "step" and e.get("loss") is None) >= 150
    run, st = states(recorded, "null_loss")
    assert st.regime != "diverged" and st.diverged_at_step is None
    with RunFollower(path) as follower:  # the incremental path, events as the follower gives them
        adv = Advisor(None)
        for batch in follower.follow(None):
            if batch.meta is not None and adv.events_seen == 0:
                adv = Advisor(batch.meta)
            adv.update_many(batch.events)
            if adv.ended:
                break
    assert adv.state().to_json("r") == st.to_json("r")
    cli = subprocess.run([sys.executable, "-m", "lrtui", "advise", "--json", str(path)], capture_output=True, text=True)
    assert cli.returncode == 0 and json.loads(cli.stdout)["regime"] != "diverged", cli.stderr


def test_7_a_spike_that_recovers_counts_as_a_catapult(recorded):
    run, st = states(recorded, "catapult")
    loss = run.table("step")["loss"]
    assert loss[:10].max() > 8 * loss[0]  # the recording: an 8-9x spike in the first steps
    assert st.catapults >= 1 and st.regime != "diverged"
    assert any(a.message.startswith("catapult") for a in st.alerts)
