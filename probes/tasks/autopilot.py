"""The paper's two-phase recipe on the tick task, with the autopilot deciding when the phase ends.

``train_ticks_autopilot`` trains the same model, data and SGD as ``probes.tasks.training.train_ticks``
(the sample sweep's fixed recipe) at one constant LR with no schedule, and lets
``Probe(autopilot=...)`` drop the LR and start weight averaging when the advisor sees the loss at
its equilibrium. It logs the same metrics: phase ``"pretrain"`` before the drop, ``"finetune"``
after it, and the averaged model's as ``"swa"`` at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from probes import Probe
from probes.tasks.ticks import TickMLP, keep_on_unit_sphere, make_tick_data
from probes.tasks.training import HESSIAN_POINTS, _EpochSampler, _log_eval, _sgd_step


def train_ticks_autopilot(
    run_dir: str | os.PathLike[str],
    lr: float,
    *,
    total_steps: int = 15_000,
    after_drop_steps: int | None = None,
    autopilot: bool | str | Sequence[str] = True,
    log_every: int = 500,
    batch_size: int = 16,
    stride: int = 8,
    sharpness_budget: float = 0.05,
    seed: int = 0,
    geometry: str = "authors",
    name: str | None = None,
    extra: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train at constant ``lr`` for ``total_steps``; the autopilot ends the first phase.

    ``after_drop_steps``: stop that many steps after the autopilot dropped the LR (the fixed
    recipe's fine-tuning length), if that comes before ``total_steps``. Returns the evaluations of
    the trained model at the end, of the averaged one (None if averaging never started), and the
    steps the autopilot acted at.
    """
    torch.manual_seed(seed)
    data = make_tick_data(seed=0, geometry=geometry)
    model = TickMLP(seed=seed)
    params = model.trained_parameters()
    optimizer = torch.optim.SGD(params, lr=lr)
    keep_on_unit_sphere(optimizer, params)
    loss_fn = nn.BCEWithLogitsLoss()
    hessian_batch = (data.x_train[:HESSIAN_POINTS], data.y_train[:HESSIAN_POINTS])
    info = {"task": "ticks-mlp", "recipe": "autopilot", "lr": lr, "optimizer": "SGD", "batch_size": batch_size,
            "total_steps": total_steps, "after_drop_steps": after_drop_steps, "seed": seed, "geometry": geometry,
            **(extra or {})}
    sampler = _EpochSampler(len(data.y_train), batch_size, seed + 1)
    stop = should_stop or (lambda: False)
    with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=hessian_batch,
               name=name or Path(run_dir).name, scale_invariant=True, stride=stride,
               sharpness_budget=sharpness_budget, adaptive_stride=False, extra=info,
               autopilot=autopilot) as probe:
        end = total_steps
        dropped_at: int | None = None
        for step in range(total_steps):
            if step >= end or not _sgd_step(model, optimizer, loss_fn, data, sampler, probe) or stop():
                break
            if dropped_at is None:
                dropped_at = next((a["step"] for a in probe.actions if a["action"] == "drop_lr"), None)
                if dropped_at is not None and after_drop_steps is not None:
                    end = min(end, dropped_at + after_drop_steps)
            if (step + 1) % log_every == 0 and step + 1 < end:
                _log_eval(probe, model, data, loss_fn, "pretrain" if dropped_at is None else "finetune")
        final = _log_eval(probe, model, data, loss_fn, "pretrain" if dropped_at is None else "finetune")
        averaged = probe.averaged_model
        swa = _log_eval(probe, averaged, data, loss_fn, "swa", checkpoints_averaged=int(averaged.n_averaged))\
            if averaged is not None else None
        acted = {a["action"]: a["step"] for a in probe.actions}
        steps_run = probe.steps.steps_taken if probe.steps is not None else None
        checkpoints = int(averaged.n_averaged) if averaged is not None else 0
    return {"lr": lr, "seed": seed, "final": final, "swa": swa, "checkpoints": checkpoints, "acted": acted,
            "steps": steps_run}
