"""The resumable eigensolver (``probes.lanczos``) on matrices whose spectrum is known: the error
guarantee of a converged estimate, cuts that leave nothing logged and resume, warm starts."""

from __future__ import annotations

import pytest
import torch

from probes.lanczos import SAFETY, TopEigen
from probes.sharpness import top_eigenvalue
from sharpness_support import CutAfter

torch.set_num_threads(1)


def _matrix(n: int, eigenvalues: torch.Tensor, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return ((q * eigenvalues) @ q.T).to(dtype)


def _spectra(n: int) -> list[torch.Tensor]:
    """Hessian-like spectra: a few outliers over a bulk, a tiny gap, a cluster, negatives, one dominant."""
    gen = torch.Generator().manual_seed(7)
    bulk = torch.rand(n, generator=gen, dtype=torch.float64)
    outliers = bulk.clone()
    outliers[-5:] = torch.tensor([5.0, 8.0, 12.0, 20.0, 30.0], dtype=torch.float64)
    tiny_gap = torch.linspace(0.0, 10.0, n, dtype=torch.float64)
    tiny_gap[-2] = 9.99
    cluster = bulk.clone()
    cluster[-4:] = torch.tensor([9.998, 9.999, 9.9995, 10.0], dtype=torch.float64)
    negative = torch.linspace(-3.0, 1.0, n, dtype=torch.float64)
    dominant = bulk * 1e-3
    dominant[-1] = 1.0
    return [outliers, tiny_gap, cluster, negative, dominant]


@pytest.mark.parametrize("numpy_on_cpu", [True, False], ids=["numpy", "torch"])
def test_every_converged_estimate_is_within_its_tolerance_of_the_top_eigenvalue(numpy_on_cpu: bool) -> None:
    """Both homes of the solver's vector algebra: numpy (the CPU's) and torch (every other device's)."""
    n = 300
    checked = 0
    for tolerance in (1e-2, 1e-3, 1e-4):
        for dtype in (torch.float64, torch.float32):
            for k, eigenvalues in enumerate(_spectra(n)):
                matrix = _matrix(n, eigenvalues, seed=k, dtype=dtype)
                top = float(eigenvalues.max())
                solver = TopEigen(tolerance, numpy_on_cpu=numpy_on_cpu)
                gen = torch.Generator().manual_seed(k)
                for _ in range(40):  # the calls of one estimate, each cut at 15 products
                    result = solver.run(matrix.mv, torch.randn(n, generator=gen, dtype=dtype), max_products=15)
                    if result.converged:
                        break
                assert result.converged, (tolerance, dtype, k)
                error = abs(result.value - top)
                assert error <= tolerance * abs(top), (tolerance, dtype, k, result, top)
                # The bound holds for the nearest eigenvalue (in a cluster narrower than the
                # tolerance that may be one below the top), up to float32 rounding.
                nearest = float((eigenvalues - result.value).abs().min())
                assert nearest <= result.bound * 1.01 + 1e-6 * abs(top)
                assert result.bound <= SAFETY * tolerance * abs(result.value)
                checked += 1
    assert checked == 30


def test_a_cut_estimate_resumes_from_its_vectors_and_converges() -> None:
    n = 200
    eigenvalues = torch.linspace(1.0, 10.0, n, dtype=torch.float64)
    eigenvalues[-2] = 9.9  # a small gap: many products from a random start
    matrix = _matrix(n, eigenvalues, seed=0)
    gen = torch.Generator().manual_seed(0)
    solver = TopEigen(1e-4)
    cut = solver.run(lambda v: matrix @ v, torch.randn(n, generator=gen, dtype=torch.float64), max_products=50,
                     out_of_time=CutAfter(0))
    # The first question comes after the start's product and MIN_NEW_PRODUCTS more.
    assert cut.products == 3 and not cut.converged and solver.kept is not None and solver.kept.shape == (2, n)
    calls = 1
    result = cut
    while not result.converged:
        result = solver.run(lambda v: matrix @ v, torch.randn(n, generator=gen, dtype=torch.float64), max_products=50,
                            out_of_time=CutAfter(2))
        calls += 1
        assert calls < 60
    assert abs(result.value - 10.0) <= 1e-4 * 10.0
    assert solver.calls == calls and solver.products >= 3 * calls  # it counts every call's products
    # A new estimate from the converged vectors: re-imaging the two kept vectors is enough.
    solver.finished()
    again = solver.run(lambda v: matrix @ v, torch.randn(n, generator=gen, dtype=torch.float64), max_products=50)
    assert again.converged and again.products <= 3 and abs(again.value - 10.0) <= 1e-3
    assert solver.products == again.products and solver.calls == 1


def test_the_legacy_one_call_api_reports_converged_only_within_tolerance() -> None:
    n = 60
    eigenvalues = torch.linspace(1.0, 10.0, n, dtype=torch.float64)
    matrix = _matrix(n, eigenvalues, seed=3)
    start = [torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)]
    estimate = top_eigenvalue(lambda v: [matrix @ v[0]], start, tolerance=1e-6, max_iters=200)
    assert estimate.converged and abs(estimate.value - 10.0) <= 1e-5
    short = top_eigenvalue(lambda v: [matrix @ v[0]], start, tolerance=1e-6, max_iters=2)
    assert not short.converged and short.vector is not None


def test_numpy_and_torch_algebra_take_the_same_steps() -> None:
    """The CPU's numpy path and the torch path of other devices are one algorithm: on the same
    operator and start they take the same products to the same value (float32 rounding apart),
    keep torch vectors between calls, and a warm start from either continues in the other."""
    n = 120
    eigenvalues = torch.linspace(0.0, 5.0, n, dtype=torch.float64)
    eigenvalues[-3:] = torch.tensor([7.0, 7.5, 8.0], dtype=torch.float64)
    matrix = _matrix(n, eigenvalues, seed=5, dtype=torch.float32)
    start = torch.randn(n, generator=torch.Generator().manual_seed(2))
    results, solvers = [], []
    for numpy_on_cpu in (True, False):
        solver = TopEigen(1e-4, numpy_on_cpu=numpy_on_cpu)
        results.append(solver.run(matrix.mv, start.clone(), max_products=40))
        solvers.append(solver)
        assert isinstance(solver.kept, torch.Tensor) and solver.kept.shape == (2, n)
    a, b = results
    assert a.converged and b.converged and a.products == b.products
    assert abs(a.value - b.value) <= 1e-5 * abs(b.value) and abs(a.value - 8.0) <= 1e-4 * 8.0
    # the numpy path's kept vectors warm-start the torch path, and the other way round
    first, second = solvers
    first.numpy_on_cpu, second.numpy_on_cpu = False, True
    for solver in (first, second):
        solver.finished()
        again = solver.run(matrix.mv, start.clone(), max_products=40)
        assert again.converged and again.products <= 3 and abs(again.value - 8.0) <= 1e-4 * 8.0
