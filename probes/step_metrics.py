"""The cheap per-step metrics: loss, gradient, update and weight norms, learning rates.

They are taken by optimizer step hooks and kept as device tensors; the host sees them in
batches (one copy per ``flush_every`` measured steps or per ``flush_seconds``), so on CUDA no
step waits for the device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


class _MeasuredStep:
    """What the hooks gathered for one optimizer step, still on the device."""

    __slots__ = ("step", "lrs", "grads", "norms", "loss", "time")

    def __init__(self, step: int, lrs: list[Any], grads: list[torch.Tensor]) -> None:
        self.step = step
        self.lrs = lrs  # as the param groups hold them (a tensor LR is read at flush)
        self.grads: list[torch.Tensor] | None = grads  # references only, until finish_step
        self.norms: list[torch.Tensor] = []  # N grad norms, N update norms, N weight norms
        self.loss: Any = None
        self.time = 0.0  # Unix time when probe.step saw it


@dataclass
class StepRecord:
    """One ``step`` event's fields, on the host."""

    step: int
    loss: float | None
    grad_norm: float
    update_norm: float
    weight_norm: float
    lr: list[float]
    effective_lr: list[float | None] = field(default_factory=list)
    time: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The event fields (without kind, step, time)."""
        return {
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "update_norm": self.update_norm,
            "weight_norm": self.weight_norm,
            "lr": self.lr,
            "effective_lr": self.effective_lr,
        }


def trained_parameters(optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[int]]:
    """The optimizer's parameters (each once) and the index of the param group each belongs to."""
    params: list[torch.Tensor] = []
    groups: list[int] = []
    seen: set[int] = set()
    for gi, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) in seen:
                continue
            seen.add(id(p))
            params.append(p)
            groups.append(gi)
    return params, groups


class StepMetrics:
    """Measures every ``stride``-th optimizer step through the optimizer's step hooks.

    The pre-step hook takes the gradient norms (the gradients the optimizer is about to use, after
    any clipping) and copies the weights into a preallocated snapshot; :meth:`finish_step`, called
    from ``probe.step(loss)``, turns the snapshot into ``w_before - w_after`` and takes its norm and
    the weight norm. Measuring at ``probe.step`` rather than in the post-step hook means Δw and
    ‖w‖ include whatever the loop does after ``optimizer.step()`` (a projection onto the sphere,
    a weight clamp). All norms of one step are one ``torch._foreach_norm`` call and one stack.

    Args:
        optimizer: the training optimizer.
        stride: measure steps whose index is a multiple of this.
        scale_invariant: one flag per param group; effective LR is logged for flagged groups.
        flush_every: measured steps held on the device before one copy to the host.
        flush_seconds: also copy when this long has passed, so slow steps still show up live.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        stride: int = 1,
        scale_invariant: Sequence[bool] | None = None,
        flush_every: int = 32,
        flush_seconds: float = 1.0,
    ) -> None:
        self.optimizer = optimizer
        self.stride = max(1, int(stride))
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = flush_seconds
        self.params, self.group_of = trained_parameters(optimizer)
        n_groups = len(optimizer.param_groups)
        self.scale_invariant = list(scale_invariant) if scale_invariant is not None else [False] * n_groups
        self.steps_taken = 0  # optimizer steps begun (the pre-step hook counts them)
        self._n_groups = n_groups
        self._snapshot: list[torch.Tensor] | None = None
        self._detached: list[torch.Tensor] = []
        self._current: _MeasuredStep | None = None  # pre-hook ran, probe.step not yet
        self._done: list[_MeasuredStep] = []  # measured, waiting for the host copy
        self._last_flush = time.monotonic()
        self._zero: torch.Tensor | None = None

    # -- hooks (the training thread) ---------------------------------------------------------
    # Per measured step this costs three foreach kernels (copy, subtract, norm) and a few
    # list operations; everything else waits for the batched flush.

    def before_step(self) -> list[StepRecord]:
        """Optimizer pre-step hook. Returns records when a batch reached the host."""
        out: list[StepRecord] = []
        if self._current is not None:
            # probe.step() was not called after the previous optimizer step: finish it now,
            # while the weights are still those that step produced, without a loss.
            out = self.finish_step(None)
        step = self.steps_taken
        self.steps_taken += 1  # counted here: a post-step hook would cost a Python call per step
        if step % self.stride:
            return out
        if len(self.optimizer.param_groups) != self._n_groups:  # add_param_group was called
            out = out + self.flush()  # rows measured with the old layout
            self._rebuild()
        if self._snapshot is None:
            self._detached = [p.detach() for p in self.params]  # share storage: see every update
            self._snapshot = [torch.empty_like(p) for p in self._detached]
            self._zero = torch.zeros((), dtype=self._detached[0].dtype, device=self._detached[0].device)
        zero = self._zero
        # The gradients the optimizer is about to use (after any clipping). Their norms are taken
        # with the others in finish_step: torch optimizers never write to .grad.
        grads = [p.grad if p.grad is not None else zero for p in self.params]
        torch._foreach_copy_(self._snapshot, self._detached)
        self._current = _MeasuredStep(step, [g["lr"] for g in self.optimizer.param_groups], grads)
        return out

    def finish_step(self, loss: Any) -> list[StepRecord]:
        """Called by ``probe.step(loss)``: completes the measured step, if any."""
        current = self._current
        if current is None:
            return []
        self._current = None
        grads, current.grads = current.grads, None
        grad_mode = torch.is_grad_enabled()
        if grad_mode:
            torch.set_grad_enabled(False)  # .grad made with create_graph=True must not grow a graph
        try:
            torch._foreach_sub_(self._snapshot, self._detached)
            current.norms = torch._foreach_norm(grads + self._snapshot + self._detached)
        finally:
            if grad_mode:
                torch.set_grad_enabled(True)
        current.loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
        current.time = time.time()
        self._done.append(current)
        if len(self._done) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            return self.flush()
        return []

    # -- host side ---------------------------------------------------------------------------

    def flush(self) -> list[StepRecord]:
        """Copy every measured step to the host (one device sync) and return the records."""
        done, self._done = self._done, []
        self._last_flush = time.monotonic()
        if not done:
            return []
        with torch.no_grad():
            # One stack and one copy for the whole batch; the arithmetic is numpy on the host.
            flat = torch.stack([n for d in done for n in d.norms]).to("cpu", torch.float64)
            losses = _losses_to_host([d.loss for d in done])
        sq = np.square(flat.numpy().reshape(len(done), -1))
        n = len(self.params)
        grad_norm = np.sqrt(sq[:, :n].sum(1)).tolist()
        update_norm = np.sqrt(sq[:, n : 2 * n].sum(1)).tolist()
        weight_sq = sq[:, 2 * n :]
        weight_norm = np.sqrt(weight_sq.sum(1)).tolist()
        invariant = [gi for gi, flag in enumerate(self.scale_invariant) if flag]
        if invariant:
            group_sq = np.zeros((len(done), self._n_groups))
            np.add.at(group_sq, (slice(None), np.asarray(self.group_of)), weight_sq)
            group_sq_list = group_sq.tolist()
        records = []
        for i, d in enumerate(done):
            lrs = [_as_float(lr) for lr in d.lrs]
            eff: list[float | None] = [None] * len(lrs)
            for gi in invariant:
                if gi < len(lrs):
                    w2 = group_sq_list[i][gi]
                    eff[gi] = lrs[gi] / w2 if w2 > 0 else math.inf
            records.append(
                StepRecord(d.step, losses[i], grad_norm[i], update_norm[i], weight_norm[i], lrs, eff, d.time)
            )
        return records

    def _rebuild(self) -> None:
        self.params, self.group_of = trained_parameters(self.optimizer)
        self._snapshot = None
        n_groups = self._n_groups = len(self.optimizer.param_groups)
        self.scale_invariant = (self.scale_invariant + [False] * n_groups)[:n_groups]


def _losses_to_host(losses: list[Any]) -> list[float | None]:
    """Loss tensors to floats with one copy; plain numbers and None pass through."""
    out: list[Any] = list(losses)
    at = [i for i, v in enumerate(losses) if isinstance(v, torch.Tensor)]
    if at:
        try:
            values = torch.stack([losses[i] for i in at]).to("cpu", torch.float64).reshape(len(at)).tolist()
        except (RuntimeError, ValueError):  # losses on several devices, or not scalars
            values = [float(losses[i].reshape(-1)[0]) for i in at]
        for i, v in zip(at, values):
            out[i] = v
    return [None if v is None else float(v) for v in out]


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu())  # a tensor LR (capturable Adam) is rare; one read is fine
    return float(value)
