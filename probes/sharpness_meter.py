"""One sharpness measurement on the hessian batch: every method, activation sparsity, resumable estimates."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from probes.activations import ZeroFractions
from probes.amp import full_precision
from probes.lanczos import TopEigen
from probes.run_state import untouched_run
from probes.sharpness import HessianOperator, adam_preconditioner, batch_sharpness, preconditioned_operator

#: Optimizers whose preconditioned sharpness λ_max(P⁻¹H) is the edge-of-stability quantity.
ADAM_LIKE = (torch.optim.Adam, torch.optim.AdamW)
#: Relative size of the random part added to a warm start.
WARM_START_NOISE = 1e-2
#: The iterative methods: logged only once converged.
ITERATIVE = ("hessian", "preconditioned")


@dataclass
class Measurement:
    """What one measurement produced: ``sharpness`` event fields per method, and sparsity.

    ``pending``: the iterative methods whose estimate the deadline (or ``max_iters``) cut: not
    logged; they continue at the next measurement."""

    sharpness: list[dict[str, Any]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    zero_fraction: list[float] = field(default_factory=list)
    seconds: float = 0.0
    pending: list[str] = field(default_factory=list)


class SharpnessMeter:
    """Measures sharpness of ``loss()`` at the current weights without changing the run.

    Methods: ``"batch"`` (one product along the batch gradient), ``"hessian"`` (top eigenvalue
    of H) and, for Adam/AdamW, ``"preconditioned"`` (top eigenvalue of P^{-1/2} H P^{-1/2}).
    Each eigenvalue estimate is a ``probes.lanczos.TopEigen``: it starts from the two Ritz
    vectors the last one left (plus a 1% random part), or from a seeded random vector the first
    time and after a non-finite result. Only a converged estimate is reported; one cut short is
    continued at the next measurement, under the Hessian at the weights then, and reported with
    the products and seconds of all its measurements.

    Args:
        module: the unwrapped model (never a DDP wrapper: no collective may run here).
        params: the trained parameters.
        loss: no arguments, returns the scalar loss on the fixed batch.
        optimizer: read for Adam's second moments; never written.
        device: the model's device (for the RNG that must be restored).
        tolerance: relative error an eigenvalue estimate is guaranteed within (see ``probes.lanczos``).
        max_iters: most products per eigenvalue estimate in one measurement.
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
        self.solvers = {m: TopEigen(tolerance) for m in self.methods if m in ITERATIVE}
        self._warm = {m: False for m in self.solvers}  # the estimate in progress began from kept vectors
        self.zero_fractions = ZeroFractions(module)
        self.disabled: set[str] = set()
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(0)

    def measure(
        self, on_method_error: Callable[[str, BaseException], None], out_of_time: Callable[[], bool] | None = None
    ) -> Measurement:
        """Run every enabled method once. A failing method is reported and skipped from then on.

        ``out_of_time()``, asked between products, cuts eigenvalue estimates short: they are not
        reported and continue at the next measurement.

        Raises whatever building the gradient graph raises (the loss, double backward): that
        disables all of sharpness, which the caller reports.
        """
        result = Measurement()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time our own work, not the queued training step
        started = time.perf_counter()
        # full_precision: the solver's matrix products too (a training loop's autocast would run them in bf16).
        with untouched_run(self.module, self.device), full_precision():
            with self.zero_fractions.recording():
                loss = self.loss()
            result.layers, result.zero_fraction = self.zero_fractions.result()
            # Checked every time: a model can change mid-run (a fused kernel switched on, a
            # branch taken) and a once-differentiable node would make every product silently wrong.
            hessian = HessianOperator(loss, self.params, check_graph=True)
            shared = time.perf_counter() - started
            methods = [m for m in self.methods if m not in self.disabled]
            batch: tuple[float, tuple[torch.Tensor, torch.Tensor] | None] = (math.nan, None)
            for method in methods:
                began = time.perf_counter()
                try:
                    if method == "batch":
                        estimate, hint = batch_sharpness(hessian)
                        batch = (estimate.value, hint)
                        fields = {"value": estimate.value, "hvps": estimate.hvps, "converged": True, "warm_start": False}
                    else:
                        fields = self._estimate(method, hessian, batch, out_of_time)
                except Exception as exc:
                    if method in ("batch", "hessian"):
                        raise  # a product failed: no method can work
                    self.disabled.add(method)
                    on_method_error(method, exc)
                    continue
                seconds = time.perf_counter() - began + shared / len(methods)
                if fields is None:
                    if method in self.solvers and self.solvers[method].calls:
                        self.solvers[method].seconds += seconds
                        result.pending.append(method)
                    continue
                if method in self.solvers:
                    seconds += self.solvers[method].seconds
                    self.solvers[method].finished()
                result.sharpness.append(
                    {"method": method, **fields, "seconds": seconds, "tolerance": self.tolerance if method != "batch" else 0.0}
                )
            del hessian, loss, batch  # free the double-backward graph before restoring the run
        result.seconds = time.perf_counter() - started
        return result

    def _estimate(
        self,
        method: str,
        hessian: HessianOperator,
        batch: tuple[float, tuple[torch.Tensor, torch.Tensor] | None],
        out_of_time: Callable[[], bool] | None,
    ) -> dict[str, Any] | None:
        """The fields of a converged estimate, or None (cut short, or no preconditioner yet)."""
        solver = self.solvers[method]
        lower_bound, hint = batch
        if method == "hessian":
            apply = hessian.flat
        else:
            inv_sqrt_p = adam_preconditioner(self.optimizer, self.params)
            if inv_sqrt_p is None:
                return None  # Adam has not stepped yet: there is no preconditioner
            apply = preconditioned_operator(hessian, inv_sqrt_p)
            hint = None  # the gradient is no help for P^-1/2 H P^-1/2
            lower_bound = math.nan
        if solver.calls == 0:
            self._warm[method] = solver.kept is not None
        result = solver.run(apply, self._fresh(), max_products=self.max_iters, out_of_time=out_of_time, hint=hint,
                            noise=WARM_START_NOISE)
        if result.converged and self._warm[method] and result.value < lower_bound * (1 - self.tolerance):
            # gᵀHg/‖g‖² is a Rayleigh quotient, so λ_max is at least that: the warm start got stuck
            # on a lower eigenvector. Start over from a random vector.
            solver.forget()
            result = solver.run(apply, self._fresh(), max_products=self.max_iters, out_of_time=out_of_time, hint=hint)
        if not math.isfinite(result.value):
            solver.forget()  # start cold again (the products it took are still counted)
            return None
        if not result.converged:
            return None
        return {
            "value": result.value,
            "hvps": solver.products,
            "converged": True,
            "warm_start": self._warm[method],
            "bound": result.bound / abs(result.value) if result.value else 0.0,
            "slices": solver.calls,
        }

    def _fresh(self) -> torch.Tensor:
        """A seeded Gaussian flat vector (the cold start, or the random part of a warm one)."""
        n = sum(p.numel() for p in self.params)
        dtype = self.params[0].dtype if self.params else torch.float32
        return torch.randn(n, dtype=dtype, device=self.device, generator=self._generator)
