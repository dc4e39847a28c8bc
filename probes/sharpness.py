"""Sharpness: the top eigenvalue of the loss Hessian (plain, Adam-preconditioned, along the gradient).

Everything here is Hessian-vector products by double backward (``torch.autograd.grad`` with
``create_graph=True``, then one more ``autograd.grad`` per product) and a Krylov eigensolver
warm-started from the previous eigenvector, with a stated relative tolerance and iteration cap.
"""

from __future__ import annotations

import math
import time
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
    image: Vector | None = None  # A·vector, when it is known for free


def axpy(terms: Sequence[tuple[float, Sequence[torch.Tensor]]]) -> Vector:
    """``Σ cᵢ vᵢ`` for parameter-shaped vectors."""
    out = [x * terms[0][0] for x in terms[0][1]]
    for c, v in terms[1:]:
        torch._foreach_add_(out, list(v), alpha=c)
    return out


#: Most vectors (each with its image) the eigensolver keeps; beyond, it restarts from its best
#: vector. Memory is twice this many parameter-sized vectors.
MAX_BASIS = 6


def top_eigenvalue(
    apply: Callable[[Vector], Vector],
    start: Vector,
    *,
    tolerance: float = 1e-3,
    max_iters: int = 20,
    warm_start: bool = False,
    deadline: float | None = None,
    hint: tuple[Vector, Vector] | None = None,
) -> Estimate:
    """The largest eigenvalue of the symmetric operator ``apply``, one product per iteration.

    A Krylov method (Lanczos with full reorthogonalization and Rayleigh-Ritz): each product adds
    the current residual ``Av - θv`` to an orthonormal basis, and the estimate is the top Ritz
    pair of the operator on that basis. For the same number of products it is never worse than
    power iteration and much better when the top eigenvalues are close. At ``MAX_BASIS`` vectors
    it restarts from its best vector, so memory stays bounded on large models.

    Stops when converged: the estimate changed by at most ``tolerance`` (relative) since the
    previous product, and the Ritz pair's residual ``r`` bounds its error by ``‖r‖²/gap`` (gap: to
    the next Ritz value) at most ``tolerance`` relative to the estimate (with ``‖r‖ <= 0.1 |θ|``,
    so the bound is trusted only near convergence). Like every Krylov or power method it cannot
    tell a cluster of near-equal top eigenvalues apart early: there the estimate can stop
    anywhere inside the cluster. It also stops after ``max_iters`` products or at ``deadline``
    (``time.perf_counter()``; at least two products are always taken): an unconverged vector
    still warm-starts the next call.

    ``hint`` is a unit vector and its image already computed (the gradient direction and its
    Hessian product, from batch sharpness): it joins the basis for free. A warm start sitting on
    what used to be the top eigenvector cannot see a new top direction it has no part in; the
    gradient usually has one (it lies mostly in the top Hessian subspace).
    """
    basis: list[Vector] = []
    images: list[Vector] = []
    products = 0

    def extend(v: Vector, av: Vector | None = None) -> bool:
        """Orthonormalize ``v`` against the basis (twice, for float32) and add it with its image."""
        nonlocal products
        original = float(dot(v, v).sqrt())
        for _ in range(2):
            for b, ab in zip(basis, images):
                c = float(dot(b, v))
                v = axpy([(1.0, v), (-c, b)])
                if av is not None:
                    av = axpy([(1.0, av), (-c, ab)])
        length = float(dot(v, v).sqrt())
        if not (math.isfinite(length) and length > 1e-6 * original):
            return False  # nothing new: v lies in the span already (or is zero or not finite)
        v = scaled(v, 1.0 / length)
        if av is None:
            av = apply(v)
            products += 1
        else:
            av = scaled(av, 1.0 / length)
        basis.append(v)
        images.append(av)
        return True

    previous = math.nan
    if not extend(start):  # a zero or non-finite start
        return Estimate(math.nan, products, False, warm_start, None)
    if hint is not None:
        extend(hint[0], hint[1])
    while True:
        k = len(basis)
        t = torch.empty(k, k, dtype=torch.float64)
        for i in range(k):
            for j in range(i, k):
                t[i, j] = t[j, i] = 0.5 * (float(dot(basis[i], images[j])) + float(dot(basis[j], images[i])))
        if not bool(torch.isfinite(t).all()):
            return Estimate(math.nan, products, False, warm_start, None)
        values, vectors = torch.linalg.eigh(t)
        theta = float(values[-1])
        y = vectors[:, -1].tolist()
        x = axpy([(c, b) for c, b in zip(y, basis)])
        ax = axpy([(c, ab) for c, ab in zip(y, images)])
        r = axpy([(1.0, ax), (-theta, x)])  # the residual: zero at an eigenvector
        r_norm = float(dot(r, r).sqrt())
        if not math.isfinite(r_norm):
            return Estimate(math.nan, products, False, warm_start, None)
        scale = max(abs(theta), 1e-30)
        # |λ - θ| <= ‖r‖ always; <= ‖r‖²/gap near convergence (gap: to the next Ritz value, which
        # early on overstates the true gap, so the estimate must also have stopped moving).
        bound = r_norm if k == 1 else min(r_norm, r_norm * r_norm / max(theta - float(values[-2]), 1e-300))
        steady = abs(theta - previous) <= tolerance * scale
        previous = theta
        if r_norm <= 1e-12 * scale or (steady and r_norm <= 0.1 * scale and bound <= tolerance * scale):
            return Estimate(theta, products, True, warm_start, x)
        if products >= max(2, max_iters) or (deadline is not None and products >= 2 and time.perf_counter() >= deadline):
            return Estimate(theta, products, False, warm_start, x)
        if k >= MAX_BASIS:  # restart from the best vector (its image is known)
            basis, images = [x], [ax]
        if not extend(r):  # the residual lies in the basis already: as good as it gets
            return Estimate(theta, products, True, warm_start, x)


def random_vector(like: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> Vector:
    """A Gaussian parameter-shaped vector (the cold start)."""
    return [torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) for p in like]


def batch_sharpness(hessian: HessianOperator) -> Estimate:
    """``gᵀHg / ‖g‖²`` along the gradient of the same batch: one product (Andreyev & Beneventano)."""
    g = hessian.gradient
    gg = dot(g, g)
    if not torch.isfinite(gg) or gg == 0:
        return Estimate(math.nan if not torch.isfinite(gg) else 0.0, 0, bool(gg == 0), False, None)
    hg = hessian(g)
    value = float(dot(g, hg) / gg)
    length = float(gg.sqrt())
    return Estimate(value, 1, True, False, scaled(g, 1.0 / length), scaled(hg, 1.0 / length))


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
