"""Sharpness: the top eigenvalue of the loss Hessian (plain, Adam-preconditioned, along the gradient).

Everything here is Hessian-vector products by double backward (``torch.autograd.grad`` with
``create_graph=True``, then one more ``autograd.grad`` per product on the retained graph); the
eigensolver is ``probes.lanczos`` (resumable, with an error bound), driven by ``probes.sharpness_meter``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from probes.lanczos import TopEigen

Vector = list[torch.Tensor]


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inner product of two parameter-shaped vectors, as a 0-d tensor in float64."""
    return torch.stack([(x.to(torch.float64) * y.to(torch.float64)).sum() for x, y in zip(a, b)]).sum()


def scaled(a: Sequence[torch.Tensor], factor: torch.Tensor | float) -> Vector:
    """``a * factor`` for a parameter-shaped vector."""
    return [x * factor.to(x.dtype) if isinstance(factor, torch.Tensor) else x * factor for x in a]


class HessianOperator:
    """``v -> H v`` for the Hessian of ``loss`` with respect to ``params``.

    The gradient graph is built once (one forward, one backward with ``create_graph=True``);
    every product is then one more backward pass through it (``retain_graph=True``), nothing
    rebuilt. Where every parameter enters the loss and all share one dtype, the gradients are
    joined into one flat tensor inside the graph, so that a product hands autograd one
    ``grad_output`` (the flat vector itself) instead of one checked view per parameter.
    :meth:`flat` takes and returns one flat vector (the eigensolver's form: its
    orthogonalization is then a matrix product, not a loop over parameters); calling the
    operator takes and returns a list of parameter-shaped tensors.
    """

    def __init__(self, loss: torch.Tensor, params: Sequence[torch.Tensor], check_graph: bool = True) -> None:
        self.params = list(params)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        if check_graph:
            refuse_once_differentiable(grads)
        # Parameters the loss does not depend on have a zero gradient and a zero Hessian block.
        self._used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.gradient: Vector = [
            g.detach() if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)
        ]
        self._grads = [grads[i] for i in self._used]
        self._used_params = [self.params[i] for i in self._used]
        self._numels = [p.numel() for p in self.params]
        self.dtype = self.params[0].dtype if self.params else torch.float32
        self.products = 0
        # One flat gradient (part of the graph): a product then passes one grad_output, not one per
        # parameter; only when every parameter is used and of one dtype (else the per-parameter path).
        self._whole = None
        if len(self._used) == len(self.params) and all(g.dtype == self.dtype for g in self._grads):
            self._whole = torch.cat([g.reshape(-1) for g in self._grads])

    def flatten(self, v: Sequence[torch.Tensor]) -> torch.Tensor:
        """A parameter-shaped vector as one flat tensor (a copy)."""
        return torch.cat([x.reshape(-1).to(self.dtype) for x in v]) if v else torch.zeros(0, dtype=self.dtype)

    def unflatten(self, flat: torch.Tensor) -> Vector:
        """Views of ``flat`` shaped like the parameters (in their dtypes)."""
        return [x.view(p.shape).to(p.dtype) for x, p in zip(flat.split(self._numels), self.params)]

    def flat(self, v: torch.Tensor) -> torch.Tensor:
        """One Hessian-vector product on flat vectors."""
        self.products += 1
        if not self._used:
            return torch.zeros_like(v)
        if self._whole is not None and v.dtype == self.dtype:
            hv = torch.autograd.grad(self._whole, self._used_params, grad_outputs=v.detach(), retain_graph=True,
                                     allow_unused=True)
        else:
            pieces = self.unflatten(v.detach())
            hv = torch.autograd.grad(self._grads, self._used_params, grad_outputs=[pieces[i] for i in self._used],
                                     retain_graph=True, allow_unused=True)
        if all(h is None for h in hv):
            raise RuntimeError("the gradient does not depend on the parameters: no double backward through this model")
        if len(self._used) == len(self.params) and all(h is not None for h in hv):
            return torch.cat([h.reshape(-1).to(v.dtype) for h in hv])
        out = torch.zeros_like(v)
        chunks = out.split(self._numels)
        for i, h in zip(self._used, hv):
            if h is not None:
                chunks[i].copy_(h.reshape(-1))
        return out

    def __call__(self, v: Sequence[torch.Tensor]) -> Vector:
        """One Hessian-vector product on parameter-shaped vectors."""
        return self.unflatten(self.flat(self.flatten(v)))


def refuse_once_differentiable(grads: Sequence[torch.Tensor | None]) -> None:
    """Raise if the gradient graph holds a function that cannot be differentiated twice.

    Such a function (``@once_differentiable``, many custom kernels) does not raise when its part
    of a Hessian-vector product is skipped: autograd silently drops it and the products come out
    wrong (often zero). So we look for its marker node before trusting any product.
    """
    seen: set[Any] = set()
    stack = [g.grad_fn for g in grads if g is not None and g.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "torch::autograd::Error":
            raise RuntimeError(
                "the model cannot be differentiated twice (a once_differentiable function in its "
                "graph); sharpness needs Hessian-vector products"
            )
        stack.extend(fn for fn, _ in node.next_functions)


@dataclass
class Estimate:
    """One eigenvalue estimate and what it cost."""

    value: float
    hvps: int
    converged: bool
    warm_start: bool
    vector: Vector | None  # the eigenvector estimate, to warm-start the next one


def top_eigenvalue(
    apply: Callable[[Vector], Vector],
    start: Vector,
    *,
    tolerance: float = 1e-3,
    max_iters: int = 20,
    warm_start: bool = False,
    deadline: float | None = None,
) -> Estimate:
    """The largest eigenvalue of the symmetric operator ``apply`` from ``start``, in one call.

    The probe's solver (``probes.lanczos``) for callers outside it: converged means its error
    bound is at most ``SAFETY * tolerance`` relative. It stops after ``max_iters`` products or at
    ``deadline`` (``time.perf_counter()``); the returned vector (the best Ritz vector) continues it.
    """
    if isinstance(apply, HessianOperator):
        operator, flatten, unflatten = apply.flat, apply.flatten, apply.unflatten
    else:
        shapes = [x.shape for x in start]
        numels = [x.numel() for x in start]

        def flatten(v: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.cat([x.reshape(-1) for x in v])

        def unflatten(flat: torch.Tensor) -> Vector:
            return [x.view(shape) for x, shape in zip(flat.split(numels), shapes)]

        def operator(v: torch.Tensor) -> torch.Tensor:
            return flatten(apply(unflatten(v)))

    solver = TopEigen(tolerance)
    out_of_time = None if deadline is None else (lambda: time.perf_counter() >= deadline)
    result = solver.run(operator, flatten(start), max_products=max(2, max_iters), out_of_time=out_of_time)
    vector = None if solver.kept is None or not math.isfinite(result.value) else unflatten(solver.kept[0])
    return Estimate(result.value, result.products, result.converged, warm_start, vector)


def random_vector(like: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> Vector:
    """A Gaussian parameter-shaped vector (the cold start)."""
    return [torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) for p in like]


def batch_sharpness(hessian: HessianOperator) -> tuple[Estimate, tuple[torch.Tensor, torch.Tensor] | None]:
    """``gᵀHg / ‖g‖²`` along the gradient of the same batch: one product (Andreyev & Beneventano).

    Also the unit gradient and its image (flat), a free basis vector for the eigensolver (the
    gradient lies mostly in the top Hessian subspace), or None when the gradient is zero or not finite.
    """
    g = hessian.flatten(hessian.gradient)
    gg = float(g.double() @ g.double())
    if not math.isfinite(gg) or gg == 0:
        return Estimate(math.nan if not math.isfinite(gg) else 0.0, 0, gg == 0, False, None), None
    hg = hessian.flat(g)
    value = float(g.double() @ hg.double()) / gg
    length = math.sqrt(gg)
    return Estimate(value, 1, True, False, None), (g / length, hg / length)


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> Vector | None:
    """``P^{-1/2}`` with ``P = diag(sqrt(v̂) + eps)`` from Adam/AdamW's live state, or None before step 1.

    ``v̂`` is the bias-corrected second moment exactly as the optimizer uses it (``max_exp_avg_sq``
    with amsgrad). Parameters the optimizer never stepped get 0: they are not being trained.
    """
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out: Vector = []
    any_state = False
    for p in params:
        group = group_of[id(p)]
        state = optimizer.state.get(p, {})
        second = state.get("max_exp_avg_sq") if group.get("amsgrad") else state.get("exp_avg_sq")
        if second is None or "step" not in state:
            out.append(torch.zeros_like(p))
            continue
        any_state = True
        step = float(state["step"])
        beta2 = float(group["betas"][1])
        eps = float(group["eps"])
        correction = math.sqrt(1.0 - beta2**step)
        denominator = second.detach().sqrt() / correction + eps
        out.append(denominator.rsqrt().to(p.dtype))
    return out if any_state else None


def preconditioned_operator(hessian: HessianOperator, inv_sqrt_p: Vector) -> Callable[[torch.Tensor], torch.Tensor]:
    """``u -> P^{-1/2} H P^{-1/2} u`` on flat vectors: symmetric, with the eigenvalues of ``P^{-1} H``."""
    d = hessian.flatten(inv_sqrt_p)

    def apply(u: torch.Tensor) -> torch.Tensor:
        return hessian.flat(u * d).mul_(d)

    return apply
