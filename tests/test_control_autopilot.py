"""The autopilot: it acts where the advisor decided, at a lag fixed by the run's own settings,
never by how fast the machine or the advisor thread was."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from control_support import events
from lrtui.advisor import Advisor
from lrtui.runlog import load_run
from probes.autopilot import MARGIN_STEPS, Autopilot
from probes.step_metrics import HOST_FLUSH_EVERY
from probes.tasks.autopilot import train_ticks_autopilot

torch.set_num_threads(1)
OPT = {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.0}]}


def _advised(run_dir: Path, action: str):
    """The offline advisor's recommendation of ``action`` on the whole recorded run (in force,
    or filed under ``done`` once the run followed it)."""
    state = Advisor.from_run(load_run(run_dir)).state()
    followed = [d.recommendation for d in state.done]
    found = [r for r in list(state.recommendations) + followed if r.action == action]
    assert found, f"the advisor never recommended {action}"
    return found[0]


def test_autopilot_drops_the_lr_at_the_advisors_step_on_the_papers_task(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train_ticks_autopilot(run, 0.00811, total_steps=5700, stride=1, sharpness_budget=0.0,
                                    autopilot="drop_lr")
    lag = HOST_FLUSH_EVERY + MARGIN_STEPS  # stride 1: the probe's batch of 128 steps, plus the margin
    rec = _advised(run, "drop_lr")
    (drop,) = events(run, "action")
    assert drop["action"] == "drop_lr" and drop["source"] == "autopilot"
    assert drop["recommendation_step"] == rec.step and drop["step"] == rec.step + lag
    assert drop["lr_before"] == [0.00811] and drop["lr_after"] == [rec.numbers["new_lr"]]
    steps = {e["step"]: e["lr"][0] for e in events(run, "step")}
    assert all(lr == 0.00811 for s, lr in steps.items() if s < drop["step"])
    assert all(lr == rec.numbers["new_lr"] for s, lr in steps.items() if s >= drop["step"])
    assert summary["acted"] == {"drop_lr": drop["step"]} and summary["swa"] is None


def _equilibrium_events(n: int) -> list[dict]:
    """Step events of a loss that falls, then stays at its level with little noise."""
    rng = np.random.default_rng(0)
    loss = 0.3 + 0.7 * np.exp(-np.arange(n) / 150) + 0.005 * rng.standard_normal(n)
    return [{"kind": "step", "step": i, "time": 1.0 + i, "loss": float(v), "grad_norm": 1.0, "lr": [0.1]}
            for i, v in enumerate(loss)]


def test_with_both_actions_it_averages_first_and_drops_when_the_window_is_complete() -> None:
    evs = _equilibrium_events(3000)
    offline = Advisor({"optimizer": OPT})
    offline.update_many(evs)
    recs = {r.action: r for r in offline.state().recommendations}
    assert {"drop_lr", "start_averaging"} <= set(recs) and recs["drop_lr"].step == recs["start_averaging"].step
    faults: list[str] = []
    pilot = Autopilot({"optimizer": OPT}, ("drop_lr", "start_averaging"), lambda: 100, faults.append)
    try:
        for k in range(0, len(evs), 50):  # handed over as the probe does: in batches
            pilot.observe(evs[k:k + 50])
        got: dict[str, int] = {}
        for step in range(len(evs) + 100 + recs["start_averaging"].numbers["averaging_steps"] + 1):
            for rec in pilot.due(step):  # waits for the thread only where it must
                got[rec.action] = step
    finally:
        pilot.close()
    s = recs["start_averaging"]
    assert got == {"start_averaging": s.step + 100, "drop_lr": s.step + 100 + s.numbers["averaging_steps"]}
    assert faults == [] and math.isinf(pilot.oldest_due)


def test_a_thread_that_fell_behind_is_waited_for_so_the_step_is_the_same() -> None:
    """The thread is made slow (its advisor's update sleeps): the decision still lands on the
    same step, because the training thread waits for it there."""
    evs = _equilibrium_events(3000)
    decided = {}
    for slow in (False, True):
        pilot = Autopilot({"optimizer": OPT}, ("drop_lr",), lambda: 100, lambda m: None)
        if slow:
            update = pilot.advisor.update

            def sluggish(event, _update=update):
                time.sleep(0.0002)
                _update(event)

            pilot.advisor.update = sluggish  # type: ignore[method-assign]
        try:
            for k in range(0, len(evs), 50):
                pilot.observe(evs[k:k + 50])
            for step in range(len(evs) + 200):
                if pilot.due(step):
                    decided[slow] = step
        finally:
            pilot.close()
    assert decided[False] == decided[True]
