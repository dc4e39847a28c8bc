"""A resumable top-eigenvalue solver for a symmetric operator given only by its products.

Lanczos in its Rayleigh-Ritz form on flat vectors: an orthonormal basis ``Q`` (rows, one
matrix) and the images ``AQ`` of its rows, so that the Rayleigh matrix ``T = Q AQᵀ`` and the
residual of every Ritz pair are exact (no three-term recurrence to lose orthogonality in
float32). Each product adds the top Ritz pair's residual to the basis; when the basis is full it
restarts thick, keeping the top two Ritz pairs, whose images are known.

Why this and not power iteration or LOBPCG: for the same products Lanczos is never worse than
power iteration and much better when the top two eigenvalues are close (its error falls with
the square root of the relative gap, not the gap); keeping two Ritz vectors makes a warm start
from the last estimate carry the next direction too; LOBPCG needs the same products, a block of
three vectors per step and more bookkeeping for no gain at block size one.

The stopping rule: the residual ``r = Ax - θx`` of the top Ritz pair (unit ``x``) bounds the
error, ``|λ - θ| <= ‖r‖`` for some eigenvalue λ; a call reports converged only when
``‖r‖ <= SAFETY * tolerance * |θ|``. θ is a Rayleigh quotient, so ``θ <= λ_max``; which
eigenvalue λ is cannot be proved from products alone (no Krylov or power method can see a
direction its start has no part in), which the random part of every start takes care of.

On the CPU (float32/float64) the solver's own vector algebra runs in numpy on the tensors'
memory (the products stay torch): its few small operations per product cost a microsecond each
there against several through torch's dispatcher; on other devices it stays in torch.

State survives between calls (:class:`TopEigen`): the kept Ritz vectors (two at most) start the
next call, which recomputes their images under the operator it is given (the Hessian moves with
the weights, so old images would be wrong). A call the caller cuts short (``out_of_time``)
leaves its best two vectors there and reports ``converged=False``; the next call continues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

FlatOperator = Callable[[torch.Tensor], torch.Tensor]
#: Float dtypes whose CPU vectors the solver handles as numpy arrays (numpy has no bfloat16).
NUMPY_DTYPES = (torch.float32, torch.float64)

#: Most basis vectors (each with its image): memory is twice this many parameter-sized vectors.
MAX_BASIS = 6
#: Ritz vectors kept across a thick restart and between calls.
KEEP = 2
#: Stop when the error bound is at most this share of the tolerance (rounding in float32 products
#: and in the bound itself get the rest).
SAFETY = 0.25
#: New products the first call of an estimate takes past re-imaging its kept vectors, however
#: short its time (doubled at each further call of the same estimate).
MIN_NEW_PRODUCTS = 2


@dataclass
class Result:
    """What one call produced. ``value`` is the top Ritz value (a lower bound on λ_max)."""

    value: float
    bound: float  # the residual norm: ``value`` is within it of an eigenvalue; inf when unknown
    products: int
    converged: bool


class TopEigen:
    """One top-eigenvalue estimate in progress and the vectors that continue it.

    Args:
        tolerance: relative; a call reports converged only when its error bound is at most
            ``SAFETY * tolerance * |θ|``.
        max_basis: most basis vectors (at least ``KEEP + 1``).
        numpy_on_cpu: run the vector algebra of CPU float32/float64 vectors in numpy (False: in
            torch, as on every other device; the two agree to rounding).
    """

    def __init__(self, tolerance: float, max_basis: int = MAX_BASIS, numpy_on_cpu: bool = True) -> None:
        self.tolerance = float(tolerance)
        self.max_basis = max(KEEP + 1, int(max_basis))
        self.numpy_on_cpu = numpy_on_cpu
        self.kept: torch.Tensor | None = None  # (j, n) orthonormal rows, j <= KEEP
        self.products = 0  # products of the estimate in progress, over all its calls
        self.seconds = 0.0  # its seconds, kept by the caller
        self.calls = 0

    def min_new_products(self) -> int:
        """New products this call takes before it asks ``out_of_time``: ``MIN_NEW_PRODUCTS``,
        doubled for every call of this estimate before it (the weights move between calls, so a
        slice too short to converge in would never converge; so a cut estimate gets longer slices)."""
        return MIN_NEW_PRODUCTS * 2 ** min(max(0, self.calls - 1), 16)

    def forget(self) -> None:
        """Drop the vectors (after a non-finite result, or a stuck warm start): start cold next time."""
        self.kept = None

    def finished(self) -> None:
        """The estimate was logged: the next one counts its own products and seconds."""
        self.products, self.seconds, self.calls = 0, 0.0, 0

    def run(
        self,
        apply: FlatOperator,
        fresh: torch.Tensor,
        *,
        max_products: int,
        out_of_time: Callable[[], bool] | None = None,
        hint: tuple[torch.Tensor, torch.Tensor] | None = None,
        noise: float = 1e-2,
    ) -> Result:
        """Continue the estimate under ``apply`` for at most ``max_products`` products.

        ``fresh``: a random vector: the start when nothing is kept, else added (``noise`` of a
        unit's length) to the last kept vector, so a direction the kept ones have no part in can show.
        ``hint``: a unit vector and its image already computed (the gradient direction): it joins
        the basis for free. ``out_of_time()`` is asked once per product after the kept vectors'
        images and :meth:`min_new_products` more.
        """
        if self.numpy_on_cpu and fresh.device.type == "cpu" and fresh.dtype in NUMPY_DTYPES:
            # On the CPU the solver's vector algebra runs in numpy on the same memory: each of its
            # small operations costs a microsecond there against several in torch's dispatcher
            # (per product some ten of them, next to a product of ~0.5 ms on a small model).
            def on_numpy(v: np.ndarray) -> np.ndarray:
                return apply(torch.from_numpy(v)).detach().numpy()

            kept = self.kept
            self.kept = (kept.numpy() if kept is not None and kept.dtype == fresh.dtype
                         and kept.device.type == "cpu" else None)
            try:
                with torch.no_grad():
                    return self._run(on_numpy, fresh.numpy(), max_products, out_of_time,
                                     None if hint is None else (hint[0].detach().numpy(), hint[1].detach().numpy()), noise)
            finally:
                if isinstance(self.kept, np.ndarray):
                    self.kept = torch.from_numpy(self.kept)
        with torch.no_grad():  # the solver's own arithmetic builds no graph (the products run their own backward)
            return self._run(apply, fresh, max_products, out_of_time, hint, noise)

    def _run(
        self,
        apply: Callable[[Any], Any],
        fresh: Any,
        max_products: int,
        out_of_time: Callable[[], bool] | None,
        hint: tuple[Any, Any] | None,
        noise: float,
    ) -> Result:
        """The solver on flat vectors that are all torch tensors or all numpy arrays (``run``)."""
        self.calls += 1
        n = fresh.shape[0]
        on_numpy = isinstance(fresh, np.ndarray)
        norm = _numpy_norm if on_numpy else _torch_norm
        # Row i is [q_i | A q_i]: one matrix product gives a Ritz vector and its image together.
        qa = (np.empty((self.max_basis, 2 * n), dtype=fresh.dtype) if on_numpy
              else torch.empty(self.max_basis, 2 * n, dtype=fresh.dtype, device=fresh.device))
        q, aq = qa[:, :n], qa[:, n:]
        t = np.zeros((self.max_basis, self.max_basis))  # the Rayleigh matrix Q AQᵀ, float64
        k = 0
        products = 0

        def add(v: Any, av: Any = None, length_known: float | None = None) -> bool:
            """Orthonormalize ``v`` against the basis and add it with its image.

            Classical Gram-Schmidt, repeated when it cancelled more than half the length (Kahan's
            "twice is enough"): a Ritz residual is orthogonal to the basis already, so one pass
            is the rule and float32 keeps the basis orthonormal to rounding.
            """
            nonlocal k, products
            if k >= self.max_basis:
                return False
            original = norm(v) if length_known is None else length_known
            length = original
            for _ in range(3 if k else 0):
                c = q[:k] @ v
                v = v - c @ q[:k]
                if av is not None:
                    av = av - c @ aq[:k]
                before, length = length, norm(v)
                if not length < 0.5 * before:
                    break
            if not (math.isfinite(length) and length > 1e-6 * original):
                return False  # nothing new (in the span already, zero, or not finite)
            q[k] = v / length
            if av is None:
                aq[k] = apply(q[k])
                products += 1
            else:
                aq[k] = av / length
            # Symmetric in exact arithmetic; eigh reads one triangle, so one product is enough.
            t[k, : k + 1] = t[: k + 1, k] = (q[: k + 1] @ aq[k]).tolist()
            k += 1
            return True

        def ritz(count: int) -> tuple[np.ndarray, Any]:
            """The top ``count`` Ritz values (best first) and the rows [x | Ax] of their vectors."""
            values, vectors = np.linalg.eigh(t[:k, :k])
            top = vectors[:, ::-1][:, :count].T.copy()
            y = top.astype(qa.dtype) if on_numpy else torch.from_numpy(top).to(dtype=qa.dtype, device=qa.device)
            return values[::-1][:count], y @ qa[:k]

        def stop(converged: bool, theta: float, bound: float) -> Result:
            _, pairs = ritz(min(KEEP, k))
            self.kept = pairs[:, :n].copy() if on_numpy else pairs[:, :n].clone()
            self.products += products
            return Result(theta, bound, products, converged)

        kept = self.kept
        self.kept = None
        if kept is not None and kept.shape[1] == n:
            # The random part goes into the last kept vector: it enters the Krylov space all the
            # same, and the best vector starts unperturbed.
            rows = list(kept)
            rows[-1] = rows[-1] + noise * fresh / max(norm(fresh), 1e-30)
            for row in rows:
                add(row)
        if k == 0 and not add(fresh):
            return Result(math.nan, math.inf, products, False)
        reimaged = products
        if hint is not None:
            add(*hint)
        while True:
            if not np.isfinite(t[:k, :k]).all():
                self.products += products
                return Result(math.nan, math.inf, products, False)
            values, pair = ritz(1)
            theta = float(values[0])
            r = pair[0, n:] - theta * pair[0, :n]  # the residual Ax - θx
            # |λ - θ| <= ‖r‖ for some eigenvalue λ of a symmetric operator and any unit vector: a
            # bound that needs no gap (the Kato-Temple ‖r‖²/gap is smaller but needs the next
            # eigenvalue, and a Ritz value stands in for it wrongly in a cluster not yet resolved).
            bound = norm(r)
            if not math.isfinite(bound):
                self.products += products
                return Result(math.nan, math.inf, products, False)
            converged = bound <= SAFETY * self.tolerance * abs(theta)
            done = converged or products >= max_products
            if not done and out_of_time is not None and products >= reimaged + self.min_new_products():
                done = out_of_time()
            if done:
                return stop(converged, theta, bound)
            if k >= self.max_basis:  # thick restart: the top Ritz pairs, whose images are known
                top = min(KEEP, k)
                values, pairs = ritz(top)
                qa[:top] = pairs
                t[:] = 0.0
                t[range(top), range(top)] = values
                k = top
            if not add(r, length_known=bound):
                # The residual is (numerically) in the span: no product can improve the pair.
                return stop(converged, theta, bound)


def _numpy_norm(v: np.ndarray) -> float:
    return float(np.linalg.norm(v))


def _torch_norm(v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(v))
