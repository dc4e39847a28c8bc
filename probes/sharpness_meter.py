"""One sharpness measurement on the hessian batch: every method, activation sparsity, warm starts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from probes.activations import ZeroFractions
from probes.run_state import untouched_run
from probes.sharpness import (
    Estimate,
    HessianOperator,
    adam_preconditioner,
    batch_sharpness,
    dot,
    preconditioned_operator,
    random_vector,
    top_eigenvalue,
)

#: Optimizers whose preconditioned sharpness λ_max(P⁻¹H) is the edge-of-stability quantity.
ADAM_LIKE = (torch.optim.Adam, torch.optim.AdamW)
#: Relative size of the random part added to a warm start.
WARM_START_NOISE = 1e-2


@dataclass
class Measurement:
    """What one measurement produced: ``sharpness`` event fields per method, and sparsity."""

    sharpness: list[dict[str, Any]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    zero_fraction: list[float] = field(default_factory=list)
    seconds: float = 0.0


class SharpnessMeter:
    """Measures sharpness of ``loss()`` at the current weights without changing the run.

    Methods: ``"batch"`` (one product along the batch gradient), ``"hessian"`` (top eigenvalue
    of H) and, for Adam/AdamW, ``"preconditioned"`` (top eigenvalue of P^{-1/2} H P^{-1/2}).
    Each eigenvalue iteration starts from its last eigenvector plus a 1% random part; the first
    one, or one after a non-finite result, starts from a seeded random vector.

    Args:
        module: the unwrapped model (never a DDP wrapper: no collective may run here).
        params: the trained parameters.
        loss: no arguments, returns the scalar loss on the fixed batch.
        optimizer: read for Adam's second moments; never written.
        device: the model's device (for the RNG that must be restored).
        tolerance: relative change and error bound at which an eigenvalue estimate stops (see ``top_eigenvalue``).
        max_iters: most products per eigenvalue estimate.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        params: Sequence[torch.Tensor],
        loss: Callable[[], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        tolerance: float = 1e-3,
        max_iters: int = 20,
    ) -> None:
        self.module = module
        self.params = [p for p in params if p.requires_grad]
        self.loss = loss
        self.optimizer = optimizer
        self.device = device
        self.tolerance = tolerance
        self.max_iters = max_iters
        self.methods = ["batch", "hessian"] + (["preconditioned"] if isinstance(optimizer, ADAM_LIKE) else [])
        self.vectors: dict[str, list[torch.Tensor] | None] = {m: None for m in self.methods}
        self.zero_fractions = ZeroFractions(module)
        self.disabled: set[str] = set()
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(0)

    def measure(self, on_method_error: Callable[[str, BaseException], None], deadline: float | None = None) -> Measurement:
        """Run every enabled method once. A failing method is reported and skipped from then on.

        ``deadline`` (``time.perf_counter()``) cuts eigenvalue iterations short (logged unconverged;
        the next measurement continues from their vectors), so one estimate never blows the budget.

        Raises whatever building the gradient graph raises (the loss, double backward): that
        disables all of sharpness, which the caller reports.
        """
        result = Measurement()
        self._batch = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time our own work, not the queued training step
        started = time.perf_counter()
        with untouched_run(self.module, self.device):
            with self.zero_fractions.recording():
                loss = self.loss()
            result.layers, result.zero_fraction = self.zero_fractions.result()
            # Checked every time: a model can change mid-run (a fused kernel switched on, a
            # branch taken) and a once-differentiable node would make every product silently wrong.
            hessian = HessianOperator(loss, self.params, check_graph=True)
            shared = time.perf_counter() - started
            methods = [m for m in self.methods if m not in self.disabled]
            for method in methods:
                began = time.perf_counter()
                try:
                    estimate = self._estimate(method, hessian, deadline)
                except Exception as exc:
                    if method == "batch" or method == "hessian":
                        raise  # a product failed: no method can work
                    self.disabled.add(method)
                    on_method_error(method, exc)
                    continue
                if estimate is None:
                    continue
                seconds = time.perf_counter() - began + shared / len(methods)
                result.sharpness.append(
                    {
                        "method": method,
                        "value": estimate.value,
                        "hvps": estimate.hvps,
                        "seconds": seconds,
                        "tolerance": self.tolerance if method != "batch" else 0.0,
                        "converged": estimate.converged,
                        "warm_start": estimate.warm_start,
                    }
                )
            del hessian, loss  # free the double-backward graph before restoring the run
        result.seconds = time.perf_counter() - started
        return result

    def _estimate(self, method: str, hessian: HessianOperator, deadline: float | None) -> Estimate | None:
        if method == "batch":
            self._batch = batch_sharpness(hessian)
            return self._batch
        hint = None
        if method == "hessian":
            apply = hessian
            if self._batch is not None and self._batch.vector is not None and self._batch.image is not None:
                hint = (self._batch.vector, self._batch.image)
        else:
            inv_sqrt_p = adam_preconditioner(self.optimizer, self.params)
            if inv_sqrt_p is None:
                return None  # Adam has not stepped yet: there is no preconditioner
            apply = preconditioned_operator(hessian, inv_sqrt_p)
        start = self.vectors[method]
        warm = start is not None
        noise = random_vector(self.params, self._generator)
        if start is None:
            start = noise
        else:
            # A direction the old eigenvector has exactly no part in (a unit that just died or
            # woke up) would stay invisible forever; a 1% random part lets it show.
            scale = WARM_START_NOISE * float(dot(start, start).sqrt() / dot(noise, noise).sqrt())
            start = [s + scale * n for s, n in zip(start, noise)]
        estimate = top_eigenvalue(
            apply, start, tolerance=self.tolerance, max_iters=self.max_iters, warm_start=warm, deadline=deadline, hint=hint
        )
        lower_bound = self._batch.value if method == "hessian" and self._batch is not None else math.nan
        if warm and estimate.converged and estimate.value < lower_bound * (1 - self.tolerance):
            # gᵀHg/‖g‖² is a Rayleigh quotient, so λ_max is at least that: the warm start got stuck
            # on a lower eigenvector. Start over from a random vector and keep the better answer.
            cold = top_eigenvalue(
                apply, random_vector(self.params, self._generator), tolerance=self.tolerance,
                max_iters=self.max_iters, deadline=deadline, hint=hint,
            )
            better = cold if cold.value > estimate.value else estimate
            estimate = Estimate(better.value, estimate.hvps + cold.hvps, better.converged, True, better.vector)
        self.vectors[method] = estimate.vector  # None after a non-finite result: start cold again
        return estimate
