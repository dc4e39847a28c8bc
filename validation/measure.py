"""The ground-truth measurements the recording takes: full-train evaluations and branches.

At every *checkpoint* the recording evaluates the model on the whole training set (loss and
score). At every *report point* it also runs two *branches*: copies of the model and optimizer
state that train on for a horizon of K steps, one at the LR in force frozen at its value
(``frozen``), one at a tenth of it (``drop``), each evaluated on the whole training set at 17
evenly spaced points; the frozen branch also evaluates the equal-weight average of its weights
over the second half of the horizon. The branches draw their own batches and restore torch's
random state, so the recorded run itself is never changed by them (a test checks this).
Labels are made from these numbers by ``validation.truth``; nothing here judges.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from validation.workloads import Workload

#: Evaluation intervals per branch (the branch is evaluated at BRANCH_EVALS + 1 points).
BRANCH_EVALS = 16
#: The x0.1 branch: the LR times this.
DROP_FACTOR = 0.1


def horizon(t: int, phase_start: int, steps: int) -> int:
    """Steps a branch at report point ``t`` trains on: half the age of the current LR phase
    (since the last step of a step schedule, else since step 0), and at least a quarter of the
    run, rounded up to a multiple of ``BRANCH_EVALS``.

    Half the age judges a power-law decline the same way early and late; the quarter of the run
    keeps early points from a horizon so short that a slow, steady start looks flat.
    """
    k = max((t - phase_start + 1) // 2, math.ceil(steps / 4), BRANCH_EVALS)
    return BRANCH_EVALS * math.ceil(k / BRANCH_EVALS)


def clone_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, copy_of_model: nn.Module) -> torch.optim.Optimizer:
    """An optimizer of the same class and state over ``copy_of_model``'s parameters, without any
    of the original's hooks (so the probe never sees a branch)."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    params = list(copy_of_model.parameters())
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[index[id(p)]] for p in g["params"]]}
              for g in optimizer.param_groups]
    clone = type(optimizer)(groups)
    clone.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return clone


def branch(workload: Workload, model: nn.Module, optimizer: torch.optim.Optimizer, lrs: list[float],
           steps: int, seed: int, average: bool = False) -> dict[str, Any]:
    """Train a copy of ``model`` for ``steps`` steps at the fixed ``lrs`` (one per param group).

    Returns ``{"lrs", "steps": [...], "loss": [...], "score": [...]}``: the full-train loss and
    score at 0, steps/16, ..., steps (NaN after a non-finite loss), and with ``average`` the
    ``averaged_loss``/``averaged_score`` of the mean of the weights at the evaluation points of
    the second half.
    """
    rng = torch.get_rng_state()
    try:
        twin = copy.deepcopy(model)
        opt = clone_optimizer(optimizer, model, twin)
        for group, lr in zip(opt.param_groups, lrs):
            group["lr"] = lr
        workload.attach(opt, twin)
        sampler = workload.sampler(seed)
        every = steps // BRANCH_EVALS
        out: dict[str, Any] = {"lrs": list(lrs), "steps": [], "loss": [], "score": []}
        snapshots: list[nn.Module] = []
        finite = True
        for j in range(BRANCH_EVALS + 1):
            if j and finite:
                for _ in range(every):
                    loss, _, _ = workload.train_step(twin, opt, sampler)
                    if not torch.isfinite(loss):
                        finite = False
                        break
            loss_value, score = workload.evaluate(twin) if finite else (math.nan, math.nan)
            finite = finite and math.isfinite(loss_value)
            out["steps"].append(j * every)
            out["loss"].append(loss_value)
            out["score"].append(score)
            if average and finite and 2 * j >= BRANCH_EVALS:
                snapshots.append(copy.deepcopy(twin))
        if average:
            if finite and snapshots:
                out["averaged_loss"], out["averaged_score"] = workload.evaluate(workload.averaged(snapshots))
            else:
                out["averaged_loss"] = out["averaged_score"] = math.nan
        return out
    finally:
        torch.set_rng_state(rng)


class Measurements:
    """Collects the checkpoints and the branches of one run while it records.

    ``at(t, ...)`` is called before optimizer step ``t`` runs (so after ``t`` steps), with the
    LRs the last step ran at (the LR in force, as the probe logs it).
    """

    def __init__(self, workload: Workload, steps: int, checkpoints: set[int], points: dict[int, str],
                 phase_start: dict[int, int], seed: int) -> None:
        self.workload = workload
        self.steps = steps
        self.checkpoints = checkpoints | set(points)
        self.points = points
        self.phase_start = phase_start
        self.seed = seed
        self.checkpoint_rows: dict[str, list[Any]] = {"step": [], "loss": [], "score": [], "lr": []}
        self.point_rows: list[dict[str, Any]] = []

    def at(self, t: int, model: nn.Module, optimizer: torch.optim.Optimizer, lrs: list[float],
           force_point: str | None = None) -> None:
        if t not in self.checkpoints and force_point is None:
            return
        loss, score = self.workload.evaluate(model)
        rows = self.checkpoint_rows
        if not rows["step"] or rows["step"][-1] != t:
            rows["step"].append(t)
            rows["loss"].append(loss)
            rows["score"].append(score)
            rows["lr"].append(lrs[0] if lrs else math.nan)
        name = force_point or self.points.get(t)
        if name is None or t == 0:
            return
        point: dict[str, Any] = {"name": name, "step": t, "lr": list(lrs), "loss": loss, "score": score}
        if math.isfinite(loss):
            k = horizon(t, self.phase_start.get(t, 0), self.steps)
            point["horizon"] = k
            seed = self.seed * 1_000_003 + t
            point["frozen"] = branch(self.workload, model, optimizer, lrs, k, seed, average=True)
            point["drop"] = branch(self.workload, model, optimizer, [lr * DROP_FACTOR for lr in lrs], k, seed)
        self.point_rows.append(point)
