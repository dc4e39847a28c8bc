"""Sharpness: the top eigenvalue of the loss Hessian (plain, Adam-preconditioned, along the gradient).

Everything here is Hessian-vector products by double backward (``torch.autograd.grad`` with
``create_graph=True``, then one more ``autograd.grad`` per product), power iteration warm-started
from the previous eigenvector, and a stated relative tolerance and iteration cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

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
    every product is then one more backward pass through it.
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
        self.products = 0

    def __call__(self, v: Sequence[torch.Tensor]) -> Vector:
        """One Hessian-vector product."""
        self.products += 1
        out: Vector = [torch.zeros_like(p) for p in self.params]
        if not self._used:
            return out
        hv = torch.autograd.grad(
            self._grads,
            [self.params[i] for i in self._used],
            grad_outputs=[v[i].detach() for i in self._used],
            retain_graph=True,
            allow_unused=True,
        )
        if all(h is None for h in hv):
            raise RuntimeError("the gradient does not depend on the parameters: no double backward through this model")
        for i, h in zip(self._used, hv):
            if h is not None:
                out[i] = h.detach()
        return out


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


def power_iteration(
    apply: Callable[[Vector], Vector],
    start: Vector,
    *,
    tolerance: float = 1e-3,
    max_iters: int = 20,
    warm_start: bool = False,
) -> Estimate:
    """Largest-magnitude eigenvalue of the symmetric operator ``apply`` by power iteration.

    The estimate after each product is the larger Ritz value on the last two iterates (a
    two-dimensional Rayleigh-Ritz step that costs no extra product and removes most of the error
    a small eigengap leaves in the plain Rayleigh quotient). It stops when the estimate changed
    by at most ``tolerance`` relative to itself, or after ``max_iters`` products. A warm start
    from last time's eigenvector typically stops after two products; a random start needs tens.
    """
    norm = dot(start, start).sqrt()
    if not torch.isfinite(norm) or norm == 0:
        return Estimate(math.nan, 0, False, warm_start, None)
    v = scaled(start, 1.0 / norm)
    previous: float | None = None
    last: tuple[Vector, Vector, float] | None = None  # (v, Av, vᵀAv) of the previous iteration
    value = math.nan
    for i in range(1, max(1, max_iters) + 1):
        av = apply(v)
        quotient = float(dot(v, av))
        length = dot(av, av).sqrt()
        if not math.isfinite(quotient) or not torch.isfinite(length):
            return Estimate(quotient, i, False, warm_start, None)
        if length == 0:  # v is in the null space: the operator is zero along everything we saw
            return Estimate(0.0, i, True, warm_start, None)
        value = quotient if last is None else _ritz_value(last, v, av, quotient)
        if previous is not None and abs(value - previous) <= tolerance * abs(value):
            return Estimate(value, i, True, warm_start, scaled(av, 1.0 / length))
        previous = value
        last = (v, av, quotient)
        v = scaled(av, 1.0 / length)
    return Estimate(value, max(1, max_iters), False, warm_start, v)


def _ritz_value(last: tuple[Vector, Vector, float], v: Vector, av: Vector, quotient: float) -> float:
    """The larger-magnitude Ritz value of A on span{u, v}, u the previous unit iterate."""
    u, au, a11 = last
    b = float(dot(u, v))
    gap = 1.0 - b * b
    if gap < 1e-8:  # the iterates are (nearly) parallel: the plane is a line
        return quotient
    a12 = 0.5 * (float(dot(u, av)) + float(dot(v, au)))  # equal in exact arithmetic (A symmetric)
    a22 = quotient
    # det([[a11, a12], [a12, a22]] - λ [[1, b], [b, 1]]) = 0
    qa, qb, qc = gap, -(a11 + a22 - 2.0 * b * a12), a11 * a22 - a12 * a12
    disc = qb * qb - 4.0 * qa * qc
    if not math.isfinite(disc) or disc < 0:
        return quotient
    roots = ((-qb + math.sqrt(disc)) / (2 * qa), (-qb - math.sqrt(disc)) / (2 * qa))
    return max(roots, key=abs)


def random_vector(like: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> Vector:
    """A Gaussian parameter-shaped vector (the cold start)."""
    return [torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) for p in like]


def batch_sharpness(hessian: HessianOperator) -> Estimate:
    """``gᵀHg / ‖g‖²`` along the gradient of the same batch: one product (Andreyev & Beneventano)."""
    g = hessian.gradient
    gg = dot(g, g)
    if not torch.isfinite(gg) or gg == 0:
        return Estimate(math.nan if not torch.isfinite(gg) else 0.0, 0, bool(gg == 0), False, None)
    value = float(dot(g, hessian(g)) / gg)
    return Estimate(value, 1, True, False, None)


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


def preconditioned_operator(hessian: HessianOperator, inv_sqrt_p: Vector) -> Callable[[Vector], Vector]:
    """``u -> P^{-1/2} H P^{-1/2} u``: symmetric, with the eigenvalues of ``P^{-1} H``."""

    def apply(u: Vector) -> Vector:
        hv = hessian([x * d for x, d in zip(u, inv_sqrt_p)])
        return [h * d for h, d in zip(hv, inv_sqrt_p)]

    return apply
