"""The autopilot on a short run of the paper's task: it acts where the advisor decided, at a lag
fixed by the run's own settings, never by how fast the machine or the advisor thread was."""

from __future__ import annotations

from pathlib import Path

import torch

from control_support import events
from lrtui.advisor import Advisor
from lrtui.runlog import load_run
from probes.autopilot import MARGIN_STEPS
from probes.control import autopilot_flush_every
from probes.tasks.autopilot import train_ticks_autopilot

torch.set_num_threads(1)
STRIDE = 8


def _advised(run_dir: Path, action: str):
    """The offline advisor's recommendation of ``action`` on the whole recorded run (also if a
    newer advisor files a followed one under ``done``)."""
    state = Advisor.from_run(load_run(run_dir)).state()
    found = [r for r in list(state.recommendations) + list(getattr(state, "done", [])) if r.action == action]
    assert found, f"the advisor never recommended {action}"
    return found[0]


def test_autopilot_averages_at_the_advisors_step_then_drops_the_lr(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train_ticks_autopilot(run, 0.00811, total_steps=4300, stride=STRIDE, sharpness_budget=0.0)
    lag = STRIDE * autopilot_flush_every(("drop_lr",), STRIDE, None) + MARGIN_STEPS
    drop_rec, avg_rec = _advised(run, "drop_lr"), _advised(run, "start_averaging")
    assert drop_rec.step == avg_rec.step  # the equilibrium: both at once
    actions = {e["action"]: e for e in events(run, "action")}
    averaging, drop = actions["start_averaging"], actions["drop_lr"]
    # The step each landed on is the advisor's step plus the fixed lag (and, for the drop, the
    # averaging window the advisor sized).
    assert averaging["recommendation_step"] == drop["recommendation_step"] == avg_rec.step
    assert averaging["step"] == avg_rec.step + lag
    assert drop["step"] == avg_rec.step + lag + avg_rec.numbers["averaging_steps"]
    assert averaging["averaging"]["checkpoint_every"] == avg_rec.numbers["checkpoint_every"]
    assert drop["lr_before"] == [0.00811] and drop["lr_after"] == [drop_rec.numbers["new_lr"]]
    steps = {e["step"]: e["lr"][0] for e in events(run, "step")}
    assert all(lr == 0.00811 for s, lr in steps.items() if s < drop["step"])
    assert all(lr == drop_rec.numbers["new_lr"] for s, lr in steps.items() if s >= drop["step"])
    # The average holds the equilibrium's checkpoints only: it stopped at the drop.
    span = drop["step"] - averaging["step"]
    every = averaging["averaging"]["checkpoint_every"]
    assert drop["averaging_stopped"] == 1 + (span - 1) // every == summary["checkpoints"]
    assert summary["acted"] == {"start_averaging": averaging["step"], "drop_lr": drop["step"]}
