"""Training loops of the sample runs and the demo, each with the probe attached.

Every function trains one run on CPU with fixed seeds, writes it to ``run_dir`` through
``probes.Probe`` and returns a short summary. The metric names logged with ``probe.log`` are the
ones the advisor reads: ``phase`` ("pretrain" | "finetune" | "swa"), ``full_train_loss``,
``train_acc``, ``test_loss``, ``test_acc``. The probes record at a fixed stride
(``adaptive_stride=False``), so a recording logs the same steps whatever the machine's speed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from probes import Probe
from probes.sharpness import HessianOperator, random_vector, top_eigenvalue
from probes.tasks.digits import DigitsCNN, make_digits_data
from probes.tasks.evaluation import evaluate
from probes.tasks.ticks import PlainTickMLP, TickMLP, keep_on_unit_sphere, make_tick_data

#: The paper's convergence test: full-train loss below this within the budget.
CONVERGED_LOSS = 1e-2
#: Train accuracy below this (labels are balanced, chance is 0.5) counts as "stayed at chance".
CHANCE_ACC = 0.6
#: Non-finite losses tolerated before a run that diverged is stopped.
NON_FINITE_STEPS_BEFORE_STOP = 3
#: Points of the tick training set the probe measures sharpness on.
HESSIAN_POINTS = 128


def stayed_at_chance(train_accs: Sequence[float]) -> bool:
    """Did the train accuracy stay at chance? Every evaluation of the last quarter of the
    pre-training (at least the last one) is below ``CHANCE_ACC``.

    "Stayed": a run whose accuracy leaves chance again and again did learn, even when it falls
    back. On the 512-point tick training set 0.6 is 4.5 binomial standard deviations above 0.5
    (3.5 above the 0.523 a constant guess of the larger class gets), so a classifier that
    ignores the labels does not reach it by sampling noise.
    """
    accs = list(train_accs)
    if not accs:
        return False
    return max(accs[-max(1, len(accs) // 4):]) < CHANCE_ACC


def ground_truth_regime(full_train_loss: float, train_accs: Sequence[float]) -> str:
    """The paper's regime of a constant-LR pre-training run, from its own numbers: the last
    full-train loss and the train accuracy of every pre-training evaluation, in order.

    ``converged`` (full-train loss < 1e-2 within the budget), ``random_walk`` (train accuracy
    stayed at chance: `stayed_at_chance`), otherwise ``chaotic_equilibrium``; ``diverged`` when
    the loss is not finite.
    """
    if not math.isfinite(full_train_loss):
        return "diverged"
    if full_train_loss < CONVERGED_LOSS:
        return "converged"
    if stayed_at_chance(train_accs):
        return "random_walk"
    return "chaotic_equilibrium"


def _log_eval(probe: Probe, model: nn.Module, data: Any, loss_fn: nn.Module, phase: str,
              step: int | None = None, **more: Any) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train, loss_fn)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, loss_fn)
    values = {"full_train_loss": train_loss, "train_acc": train_acc,
              "test_loss": test_loss, "test_acc": test_acc}
    probe.log(step=step, phase=phase, **values, **more)
    return values


class _EpochSampler:
    """Mini-batch indices: a fresh seeded permutation each epoch, as a DataLoader with shuffle."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.int64)

    def next(self) -> torch.Tensor:
        if len(self.order) < self.batch_size:
            self.order = torch.randperm(self.n, generator=self.generator)
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return batch


def train_ticks(
    run_dir: str | os.PathLike[str],
    lr: float,
    *,
    pretrain_steps: int = 10_000,
    finetune_steps: int = 5_000,
    finetune_lr: float = 1e-3,
    average_last: int = 2_000,
    average_every: int = 50,
    log_every: int = 500,
    batch_size: int = 16,
    stride: int = 1,
    sharpness_budget: float = 0.05,
    seed: int = 0,
    geometry: str = "ours",
    name: str | None = None,
    extra: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One LR of the paper's sweep: pre-train at ``lr``, then fine-tune and average.

    Pre-training runs ``pretrain_steps`` of plain SGD at constant ``lr`` on the unit sphere. Weight
    averaging (``AveragedModel``, equal weights) collects a checkpoint every ``average_every`` steps
    over the last ``average_last`` pre-training steps; the MLP has no BatchNorm, so ``update_bn`` is
    not needed. Its result is logged as phase "swa" at the last pre-training step. Fine-tuning then
    continues from the pre-trained weights with the same optimizer at ``finetune_lr`` (the LR
    change starts a new segment in the run). ``should_stop()`` returning True ends the training
    after the current step (the demo stops on a signal that way), the run closed cleanly.
    ``geometry`` picks the tick features' geometry (``probes.tasks.ticks.GEOMETRIES``).
    """
    torch.manual_seed(seed)
    data = make_tick_data(seed=0, geometry=geometry)  # one dataset for the whole sweep
    model = TickMLP(seed=seed)
    params = model.trained_parameters()
    optimizer = torch.optim.SGD(params, lr=lr)
    keep_on_unit_sphere(optimizer, params)  # before the probe, so the probe sees the projected weights
    loss_fn = nn.BCEWithLogitsLoss()
    hessian_batch = (data.x_train[:HESSIAN_POINTS], data.y_train[:HESSIAN_POINTS])
    info = {
        "task": "ticks-mlp",
        "lr": lr,
        "optimizer": "SGD",
        "batch_size": batch_size,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": finetune_steps,
        "finetune_lr": finetune_lr,
        "finetune_starts_at_step": pretrain_steps,
        "average_last": average_last,
        "average_every": average_every,
        "seed": seed,
        "geometry": geometry,
        **(extra or {}),
    }
    sampler = _EpochSampler(len(data.y_train), batch_size, seed + 1)
    stop = should_stop or (lambda: False)
    averaged = AveragedModel(model)
    averaged_count = 0
    summary: dict[str, Any] = {"lr": lr}
    with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=hessian_batch,
               name=name or Path(run_dir).name, scale_invariant=True, stride=stride,
               sharpness_budget=sharpness_budget, adaptive_stride=False, extra=info) as probe:
        step = 0
        history: list[dict[str, float]] = []
        for step in range(pretrain_steps):
            if not _sgd_step(model, optimizer, loss_fn, data, sampler, probe) or stop():
                break
            if step >= pretrain_steps - average_last and (step + 1) % average_every == 0:
                averaged.update_parameters(model)
                averaged_count += 1
            if (step + 1) % log_every == 0 and step + 1 < pretrain_steps:
                history.append(_log_eval(probe, model, data, loss_fn, "pretrain"))
        pre = _log_eval(probe, model, data, loss_fn, "pretrain")
        history.append(pre)
        regime = ground_truth_regime(pre["full_train_loss"], [h["train_acc"] for h in history])
        probe.log(phase="pretrain", ground_truth_regime=regime)
        swa = _log_eval(probe, averaged, data, loss_fn, "swa", checkpoints_averaged=averaged_count)
        for group in optimizer.param_groups:
            group["lr"] = finetune_lr
        for ft_step in range(finetune_steps if not stop() else 0):
            if not _sgd_step(model, optimizer, loss_fn, data, sampler, probe) or stop():
                break
            if (ft_step + 1) % (2 * log_every) == 0 and ft_step + 1 < finetune_steps:
                _log_eval(probe, model, data, loss_fn, "finetune")
        fine = _log_eval(probe, model, data, loss_fn, "finetune")
    summary.update(regime=regime, pretrain=pre, swa=swa, finetune=fine)
    return summary


def _sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, data: Any,
              sampler: _EpochSampler, probe: Probe) -> bool:
    """One mini-batch step; False when the loss is not finite (the normalized MLP never gets there)."""
    idx = sampler.next()
    loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    probe.step(loss)
    return bool(torch.isfinite(loss))


def top_hessian_eigenvalue(loss_of: Callable[[], torch.Tensor], params: list[nn.Parameter],
                           iters: int = 50, seed: int = 0) -> float:
    """λ_max of the Hessian of ``loss_of()`` (used once, to choose an LR): the probe's own
    eigensolver, from a seeded random start, run to a tight tolerance."""
    start_vector = random_vector(params, torch.Generator().manual_seed(seed))
    return top_eigenvalue(HessianOperator(loss_of(), params), start_vector, tolerance=1e-7, max_iters=iters).value


def _pm_one(y: torch.Tensor) -> torch.Tensor:
    return 2 * y - 1


class _SignedMSE(nn.Module):
    """MSE between a scalar output and the label mapped to ±1 (the catapult papers' loss)."""

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out - _pm_one(y)) ** 2).mean()


def train_catapult(run_dir: str | os.PathLike[str], *, lr_times_sharpness: float = 3.0,
                   steps: int = 600, seed: int = 0) -> dict[str, Any]:
    """Full-batch GD on the unnormalized tick MLP with η a little above 2/λ0 (catapult).

    λ0 (sharpness at initialization) is measured first; η = ``lr_times_sharpness`` / λ0 lies in
    (2/λ0, 4/λ0), where Lewkowycz et al. (2020) see one loss spike and a landing in a flatter region.
    """
    torch.manual_seed(seed)
    data = make_tick_data(seed=0)
    model = PlainTickMLP(seed=seed)
    loss_fn = _SignedMSE()
    params = list(model.parameters())
    lambda0 = top_hessian_eigenvalue(lambda: loss_fn(model(data.x_train), data.y_train), params)
    lr = lr_times_sharpness / lambda0
    optimizer = torch.optim.SGD(params, lr=lr)
    extra = {"task": "ticks-plain-mlp-catapult", "lr": lr, "sharpness_at_init": lambda0,
             "lr_times_sharpness_at_init": lr_times_sharpness, "optimizer": "GD (full batch)",
             "loss": "MSE to ±1", "steps": steps, "seed": seed}
    losses: list[float] = []
    with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=(data.x_train, data.y_train),
               name=Path(run_dir).name, sharpness_budget=0.3, adaptive_stride=False, extra=extra) as probe:
        _log_eval(probe, model, data, loss_fn, "pretrain", step=0)
        for step in range(steps):
            loss = loss_fn(model(data.x_train), data.y_train)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe.step(loss)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                break
            if (step + 1) % 100 == 0:
                _log_eval(probe, model, data, loss_fn, "pretrain")
        final = _log_eval(probe, model, data, loss_fn, "pretrain")
        lambda_end = top_hessian_eigenvalue(lambda: loss_fn(model(data.x_train), data.y_train), params)
        probe.log(sharpness_at_end=lambda_end, stability_threshold=2 / lr)
    peak = max(range(len(losses)), key=losses.__getitem__)
    return {"lr": lr, "sharpness_at_init": lambda0, "sharpness_at_end": lambda_end,
            "loss_start": losses[0], "loss_peak": losses[peak], "peak_step": peak,
            "loss_end": losses[-1], "final": final}


def train_diverging(run_dir: str | os.PathLike[str], *, lr_times_sharpness: float = 20.0,
                    max_steps: int = 500, seed: int = 0) -> dict[str, Any]:
    """The unnormalized tick MLP with η = 20/λ0: the loss blows up to inf/NaN, and training stops.

    The loop stops ``NON_FINITE_STEPS_BEFORE_STOP`` steps after the first non-finite loss, as a
    careful training script would.
    """
    torch.manual_seed(seed)
    data = make_tick_data(seed=0)
    model = PlainTickMLP(seed=seed)
    loss_fn = _SignedMSE()
    params = list(model.parameters())
    lambda0 = top_hessian_eigenvalue(lambda: loss_fn(model(data.x_train), data.y_train), params)
    lr = lr_times_sharpness / lambda0
    optimizer = torch.optim.SGD(params, lr=lr)
    extra = {"task": "ticks-plain-mlp-diverging", "lr": lr, "sharpness_at_init": lambda0,
             "lr_times_sharpness_at_init": lr_times_sharpness, "optimizer": "SGD",
             "batch_size": 16, "loss": "MSE to ±1", "seed": seed,
             "ground_truth_regime": "diverged"}
    sampler = _EpochSampler(len(data.y_train), 16, seed + 1)
    non_finite = 0
    step = 0
    with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=(data.x_train, data.y_train),
               name=Path(run_dir).name, adaptive_stride=False, extra=extra) as probe:
        _log_eval(probe, model, data, loss_fn, "pretrain", step=0)
        for step in range(max_steps):
            if not _sgd_step(model, optimizer, loss_fn, data, sampler, probe):
                non_finite += 1
                if non_finite >= NON_FINITE_STEPS_BEFORE_STOP:
                    break
        final = _log_eval(probe, model, data, loss_fn, "pretrain")
        probe.log(ground_truth_regime="diverged", stopped_at_step=step)
    return {"lr": lr, "sharpness_at_init": lambda0, "stopped_at_step": step, "final": final}


class OneHotMSE(nn.Module):
    """MSE between logits and one-hot labels: the loss of Cohen et al.'s edge-of-stability runs."""

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out - nn.functional.one_hot(y, out.shape[1]).float()) ** 2).sum(1).mean() / 2


def train_digits(
    run_dir: str | os.PathLike[str],
    optimizer_name: str,
    lr: float,
    *,
    steps: int = 1500,
    log_every: int = 100,
    sharpness_budget: float = 0.25,
    n_train: int = 1200,
    seed: int = 0,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Full-batch training of the digits CNN ("gd", "momentum" SGD β=0.9, or "adam").

    Full batch, so the edge-of-stability thresholds apply as stated: 2/η (GD), 2(1+β)/η = 3.8/η
    (momentum), and 38/η for Adam's preconditioned sharpness. Stops at a non-finite loss.
    """
    torch.manual_seed(seed)
    data = make_digits_data(seed=0, n_train=n_train)
    model = DigitsCNN(seed=seed)
    loss_fn = OneHotMSE()
    if optimizer_name == "gd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        threshold = 2 / lr
    elif optimizer_name == "momentum":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        threshold = 2 * (1 + 0.9) / lr
    elif optimizer_name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        threshold = 38 / lr
    else:
        raise ValueError(f"unknown optimizer {optimizer_name!r}")
    info = {"task": "digits-cnn", "lr": lr, "optimizer": optimizer_name, "batch_size": n_train,
            "loss": "MSE to one-hot", "steps": steps, "seed": seed,
            "expected_stability_threshold": threshold}
    info.update(extra or {})
    summary: dict[str, Any] = {"lr": lr, "threshold": threshold}
    with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=(data.x_train, data.y_train),
               name=name or Path(run_dir).name, sharpness_budget=sharpness_budget, adaptive_stride=False, extra=info) as probe:
        for step in range(steps):
            loss = loss_fn(model(data.x_train), data.y_train)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            probe.step(loss)
            value = float(loss.detach())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                summary["final"] = _log_eval(probe, model, data, loss_fn, "pretrain")
            if not math.isfinite(value):
                summary["final"] = _log_eval(probe, model, data, loss_fn, "pretrain")
                break
    return summary
