"""The probe's time budget (pure arithmetic) and how an eigenvalue estimate obeys its deadline."""

from __future__ import annotations

import time

import torch

from probes.budget import FIRST_GUESS_STEPS, OverheadBudget
from probes.sharpness import top_eigenvalue

torch.set_num_threads(1)


def test_budget_admits_a_measurement_only_when_it_fits() -> None:
    budget = OverheadBudget(0.05)
    step = 0.01
    # Before any measurement its cost is guessed from the step time.
    assert not budget.allows(probe_seconds=0.0, wall_seconds=FIRST_GUESS_STEPS * step * 19, step_seconds=step)
    assert budget.allows(probe_seconds=0.0, wall_seconds=FIRST_GUESS_STEPS * step * 21, step_seconds=step)
    budget.spent(1.0)
    assert budget.expected == 1.0
    assert not budget.allows(probe_seconds=1.0, wall_seconds=39.0, step_seconds=step)  # 1 + 1 > 0.05 * 39
    assert budget.allows(probe_seconds=1.0, wall_seconds=40.0, step_seconds=step)
    budget.spent(3.0)
    assert budget.expected == 2.0  # an average: one slow estimate does not starve the schedule
    assert budget.slack(probe_seconds=4.0, wall_seconds=100.0) == 1.0


def test_budget_extremes() -> None:
    assert not OverheadBudget(0).allows(0.0, 1e9, 1.0)
    unlimited = OverheadBudget(1.0)
    assert unlimited.allows(1e9, 1.0, 1.0) and unlimited.slack(1e9, 1.0) == float("inf")


def test_eigenvalue_estimate_stops_at_its_deadline_and_resumes_warm() -> None:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=gen, dtype=torch.float64))
    eigenvalues = torch.linspace(1.0, 10.0, 60, dtype=torch.float64)
    eigenvalues[-2] = 9.9  # a small gap: many products from a random start
    matrix = q @ torch.diag(eigenvalues) @ q.T

    def apply(v: list[torch.Tensor]) -> list[torch.Tensor]:
        return [matrix @ v[0]]

    start = [torch.randn(60, generator=gen, dtype=torch.float64)]
    cut = top_eigenvalue(apply, start, tolerance=1e-6, max_iters=50, deadline=time.perf_counter() - 1)
    assert cut.hvps == 2 and not cut.converged and cut.vector is not None
    total = cut.hvps
    estimate = cut
    while not estimate.converged:
        estimate = top_eigenvalue(apply, estimate.vector, tolerance=1e-6, max_iters=50, warm_start=True)
        total += estimate.hvps
    assert abs(estimate.value - 10.0) < 1e-4
    cold = top_eigenvalue(apply, start, tolerance=1e-6, max_iters=50)
    assert cold.converged and abs(cold.value - 10.0) < 1e-4
    # Once converged, a warm start from the answer needs one or two products.
    again = top_eigenvalue(apply, estimate.vector, tolerance=1e-6, max_iters=50, warm_start=True)
    assert again.hvps <= 2 and again.converged and abs(again.value - 10.0) < 1e-4
