"""The learning-rate schedules of the corpus, built from torch's schedulers as users build them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch

SCHEDULES = ("constant", "multistep", "step", "exponential", "warmup_cosine", "onecycle")
#: Warm-up share of ``warmup_cosine`` (as ``transformers.get_cosine_schedule_with_warmup`` is used).
WARMUP_SHARE = 0.05
#: ``multistep``: the LR is multiplied by 0.1 at these shares of the run.
MULTISTEP_AT = (0.5, 0.75)
#: ``step``: StepLR every third of the run, times 0.3.
STEP_EVERY_SHARE, STEP_GAMMA = 1 / 3, 0.3
#: ``exponential``: ExponentialLR with the gamma that takes the LR down this far over the run.
EXPONENTIAL_FALL = 0.01
#: OneCycleLR's default: the LR rises over the first 30% of the run.
ONECYCLE_PCT = 0.3


@dataclass(frozen=True)
class Phase:
    """A stretch of the schedule: ``name``, first step ``start``, step ``stop`` (exclusive)."""

    name: str
    start: int
    stop: int


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, steps: int) -> Any:
    """The scheduler for ``name`` (None for ``constant``), stepped once per optimizer step."""
    if name == "constant":
        return None
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones(name, steps)), gamma=0.1)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=round(steps * STEP_EVERY_SHARE), gamma=STEP_GAMMA)
    if name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=EXPONENTIAL_FALL ** (1 / steps))
    if name == "warmup_cosine":
        warmup = warmup_steps(name, steps)

        def factor(step: int) -> float:  # transformers' get_cosine_schedule_with_warmup
            if step < warmup:
                return step / max(1, warmup)
            progress = (step - warmup) / max(1, steps - warmup)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if name == "onecycle":
        cycle_momentum = any(g.get("momentum", 0) for g in optimizer.param_groups) or any(
            "betas" in g for g in optimizer.param_groups)
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps,
                                                   pct_start=ONECYCLE_PCT, cycle_momentum=cycle_momentum)
    raise ValueError(f"unknown schedule {name!r}")


def warmup_steps(name: str, steps: int) -> int:
    """Steps in which the schedule raises the LR (0 for schedules without a warm-up)."""
    if name == "warmup_cosine":
        return max(1, round(steps * WARMUP_SHARE))
    if name == "onecycle":
        return round(steps * ONECYCLE_PCT)  # where OneCycleLR reaches its peak (its step_size_up)
    return 0


def milestones(name: str, steps: int) -> tuple[int, ...]:
    """Steps at which a step schedule changes the LR (the first step that runs at the new LR)."""
    if name == "multistep":
        return tuple(round(steps * share) for share in MULTISTEP_AT)
    if name == "step":
        every = round(steps * STEP_EVERY_SHARE)
        return tuple(range(every, steps, every))
    return ()


def phases(name: str, steps: int) -> list[Phase]:
    """The schedule's phases: warm-up and decay, one decay, or the constant stretches of a step schedule."""
    warmup = warmup_steps(name, steps)
    if warmup:
        return [Phase("warmup", 0, warmup), Phase("decay", warmup, steps)]
    if name == "exponential":
        return [Phase("decay", 0, steps)]
    cuts = (0, *milestones(name, steps), steps)
    if len(cuts) == 2:
        return [Phase("constant", 0, steps)]
    return [Phase(f"lr{i + 1}", a, b) for i, (a, b) in enumerate(pairwise(cuts))]
