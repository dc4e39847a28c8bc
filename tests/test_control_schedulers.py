"""An LR change under a real torch LR scheduler: the schedule goes on from the new level.

The oracle is the same scheduler run without the change: from the step of the change on, every
LR must be the factor times the LR the schedule gives without it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler as sched
from torch.optim.swa_utils import SWALR

from control_support import Training, events
from probes.lr_rescale import RescaleError, apply_change, find_scheduler, plan_change

STEPS, AT, FACTOR = 60, 23, 0.3

SCHEDULERS = {
    "LambdaLR": lambda o: sched.LambdaLR(o, lambda s: 1.0 / (1 + s)),
    "MultiplicativeLR": lambda o: sched.MultiplicativeLR(o, lambda s: 0.97),
    "StepLR": lambda o: sched.StepLR(o, step_size=10, gamma=0.5),
    "MultiStepLR": lambda o: sched.MultiStepLR(o, milestones=[10, 30, 45], gamma=0.5),
    "ConstantLR": lambda o: sched.ConstantLR(o, factor=0.5, total_iters=30),
    "LinearLR": lambda o: sched.LinearLR(o, start_factor=0.1, total_iters=40),
    "ExponentialLR": lambda o: sched.ExponentialLR(o, gamma=0.97),
    "PolynomialLR": lambda o: sched.PolynomialLR(o, total_iters=STEPS, power=2.0),
    "CosineAnnealingLR": lambda o: sched.CosineAnnealingLR(o, T_max=20, eta_min=0.001),
    "CosineAnnealingWarmRestarts": lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=15, eta_min=0.002),
    "CyclicLR": lambda o: sched.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=7),
    "OneCycleLR": lambda o: sched.OneCycleLR(o, max_lr=0.2, total_steps=STEPS + 1),
    "SWALR": lambda o: SWALR(o, swa_lr=0.01, anneal_epochs=30),
    "SequentialLR": lambda o: sched.SequentialLR(o, [sched.LinearLR(o, start_factor=0.1, total_iters=10),
                                                     sched.CosineAnnealingLR(o, T_max=STEPS)], milestones=[10]),
    "warmup+cosine after the change": lambda o: sched.SequentialLR(
        o, [sched.LinearLR(o, start_factor=0.1, total_iters=30), sched.CosineAnnealingLR(o, T_max=STEPS)],
        milestones=[30]),
    "ChainedScheduler": lambda o: sched.ChainedScheduler([sched.ExponentialLR(o, gamma=0.98),
                                                           sched.StepLR(o, step_size=9, gamma=0.5)]),
}


def _optimizer(groups: int = 2) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(3, 3) for _ in range(groups)]
    return torch.optim.SGD([{"params": m.parameters(), "lr": 0.1 / 3 ** i} for i, m in enumerate(layers)],
                           lr=0.1, momentum=0.9)


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int, change=None) -> list[list[float]]:
    """The LRs each optimizer step runs with; ``change(optimizer, scheduler)`` before step AT."""
    out = []
    for step in range(steps):
        if step == AT and change is not None:
            change(optimizer, scheduler)
        optimizer.step()  # no gradients: the weights stay; only the schedule matters
        out.append([float(g["lr"]) for g in optimizer.param_groups])
        if isinstance(scheduler, sched.ReduceLROnPlateau):
            scheduler.step(1.0)
        else:
            scheduler.step()
    return out


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedule_goes_on_from_the_new_level(name: str) -> None:
    plain_opt = _optimizer()
    plain = _lrs(plain_opt, SCHEDULERS[name](plain_opt), STEPS)
    opt = _optimizer()
    scheduler = SCHEDULERS[name](opt)

    def change(o, s):
        assert find_scheduler(o) is s  # the outermost scheduler, not a SequentialLR's child
        apply_change(o, plan_change(o, s, factors=[FACTOR, FACTOR]))

    changed = _lrs(opt, scheduler, STEPS, change)
    assert changed[:AT] == plain[:AT]
    for step in range(AT, STEPS):
        assert changed[step] == pytest.approx([FACTOR * v for v in plain[step]], rel=1e-9), step
    assert scheduler.get_last_lr() == pytest.approx([float(g["lr"]) for g in opt.param_groups])


def test_reduce_on_plateau_reduces_from_the_new_level() -> None:
    opt = _optimizer()
    s = sched.ReduceLROnPlateau(opt, factor=0.5, patience=2, min_lr=1e-3)
    apply_change(opt, plan_change(opt, s, factors=[FACTOR, FACTOR]))
    for _ in range(4):  # no improvement: one reduction
        s.step(1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * FACTOR * 0.5, 0.1 / 3 * FACTOR * 0.5])
    assert s.min_lrs == pytest.approx([1e-3 * FACTOR] * 2)


def test_an_absolute_lr_per_group_and_a_different_factor_per_group() -> None:
    plain_opt = _optimizer()
    plain = _lrs(plain_opt, sched.LambdaLR(plain_opt, lambda s: 0.99 ** s), STEPS)
    opt = _optimizer()
    s = sched.LambdaLR(opt, lambda s: 0.99 ** s)
    news = [0.02, 0.004]

    def change(o, s):
        apply_change(o, plan_change(o, s, new_lrs=news))

    changed = _lrs(opt, s, STEPS, change)
    assert changed[AT] == pytest.approx(news)
    f = [news[g] / plain[AT][g] for g in range(2)]
    assert changed[-1] == pytest.approx([f[g] * plain[-1][g] for g in range(2)])


class _OwnSchedule(sched.LRScheduler):
    """A scheduler of the user's own: how it computes is unknown to the probe."""

    def get_lr(self):
        return [0.05 for _ in self.optimizer.param_groups]


@pytest.mark.parametrize("make, reason", [
    (lambda o: _OwnSchedule(o), "not one the probe can rescale"),
    (lambda o: sched.CosineAnnealingLR(o, T_max=10, eta_min=0.001), "one eta_min for all param groups"),
])
def test_changes_that_cannot_be_made_right_are_refused(make, reason: str) -> None:
    opt = _optimizer()
    s = make(opt)
    before = copy.deepcopy([dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups])
    with pytest.raises(RescaleError, match=reason):
        plan_change(opt, s, factors=[0.5, 0.2])
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before


def test_two_schedulers_on_one_optimizer_are_ambiguous() -> None:
    opt = _optimizer()
    a, b = sched.StepLR(opt, 5), sched.ExponentialLR(opt, 0.9)
    with pytest.raises(RescaleError, match="pass scheduler= to Probe"):
        find_scheduler(opt)
    del a, b


def test_through_the_probe_a_refusal_is_a_warning_and_the_lr_stays(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", groups=2, control=True, scheduler=lambda o: _OwnSchedule(o))
    t.step(2)
    cid = t.send("set_lr", factor=0.5)
    t.step_past_look()
    t.step()
    evs = t.close()
    assert all(lr == [0.05, 0.05] for lr in t.lrs[1:])
    (warning,) = [e for e in events(t.run_dir, "warning") if e.get("id") == cid]
    assert "_OwnSchedule is not one the probe can rescale" in warning["message"]
    assert not [e for e in evs if e["kind"] == "action"]


def test_a_training_loop_that_sets_the_lr_itself_is_reported(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True)
    t.step(2)
    t.send("set_lr", lr=0.02)
    at = t.step_past_look()
    t.step(2)
    for g in t.optimizer.param_groups:  # the user's own warm-up code, say
        g["lr"] = 0.1
    t.step(2)
    t.close()
    assert t.lrs[at] == [0.02] and t.lrs[-1] == [0.1]
    (notice,) = [e for e in events(t.run_dir, "warning") if "did not hold" in e["message"] or
                 "sets the LR itself" in e["message"]]
    assert notice["step"] == at + 3
