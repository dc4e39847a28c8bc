"""The probe's time budget (pure arithmetic) and the stride it thins the per-step metrics to in a
real training loop (how an eigenvalue estimate obeys its deadline: test_probe_sharpness_solver.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from probes import Probe
from probes.budget import FIRST_GUESS_STEPS, MAX_THINNING, WINDOW_SECONDS, WINDOW_STEPS, OverheadBudget, StrideGovernor

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


def test_stride_governor_thins_in_powers_of_two_and_comes_back_without_flapping() -> None:
    gov = StrideGovernor(0.05, stride=3)  # the per-step metrics may take 2.5% of wall time
    t, spent, steps = 0.0, 0.0, 0

    def window(share: float, seconds: float = WINDOW_SECONDS, n: int = WINDOW_STEPS) -> int | None:
        nonlocal t, spent, steps
        t, spent, steps = t + seconds, spent + share * seconds, steps + n
        return gov.update(t, spent, steps)

    assert gov.update(t, spent, steps) is None  # the first call only marks the window's start
    assert window(0.09, seconds=WINDOW_SECONDS / 2) is None  # too short to judge
    assert window(0.09, seconds=WINDOW_SECONDS / 2, n=0) == 3 * 4  # 9% over the whole window: 3.6x, so 4x
    assert window(0.03) == 3 * 8  # 3% > 2.5%: one more doubling
    assert window(0.02) is None and window(0.007) is None  # inside the band: no change
    assert window(0.006) == 3 * 4  # under a quarter of 2.5%: halve
    assert window(0.012) is None  # halving at most doubled the share: it stays, no flapping
    assert window(0.001) == 3 * 2 and window(0.001) == 3 and window(0.0) is None  # never under the user's stride
    assert window(5.0) == 3 * MAX_THINNING and window(5.0) is None  # capped
    few = StrideGovernor(0.05, stride=1)
    assert few.update(0.0, 0.0, 0) is None
    assert few.update(10.0, 5.0, WINDOW_STEPS - 1) is None and few.update(10.0, 5.0, WINDOW_STEPS) == 32  # 20x: 32x
    for budget, enabled in ((0.0, True), (1.0, True), (0.05, False)):
        off = StrideGovernor(budget, stride=1, enabled=enabled)
        assert off.update(0.0, 0.0, 0) is None and off.update(10.0, 9.0, 10_000) is None and off.stride == 1


def _tiny_training(run_dir: Path, seconds: float, **options: object) -> list[dict]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    with Probe(model, optimizer, run_dir, system_stats=False, **options) as probe:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            loss = torch.nn.functional.mse_loss(model(x[:8]), y[:8])
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            probe.step(loss)
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_per_step_metrics_over_their_share_are_thinned(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # A tiny model's step is a few hundred µs, of which the per-step metrics take tens: far over
    # half of a 0.2% budget, so the probe must measure ever fewer steps and say so.
    events = _tiny_training(tmp_path / "thin", 3 * WINDOW_SECONDS + 1.0, sharpness_budget=0.002)
    notices = [e for e in events if e["kind"] == "warning"]
    assert notices and all(e["source"] == "stride" for e in notices)
    assert "over half of sharpness_budget=0.002" in notices[0]["message"]
    stderr = [line for line in capfd.readouterr().err.splitlines() if line.startswith("lrtui probe:")]
    assert len(stderr) == 1 and "measuring every" in stderr[0]  # said once on stderr, every change logged
    steps = [e["step"] for e in events if e["kind"] == "step"]
    changes = [
        (int(e["message"].split("from step ")[1].split()[0]), int(e["message"].split("every ")[1].split()[0])) for e in notices
    ]
    assert steps[: changes[0][0]] == list(range(changes[0][0]))  # every step until the first thinning
    assert changes[0][1] >= 2
    for (begin, stride), (end, _) in zip(changes, changes[1:] + [(steps[-1] + 1, 0)]):
        assert all(s % stride == 0 for s in steps if begin <= s < end)  # each stretch at its stride
    assert [e for e in events if e["kind"] == "overhead"][-1]["stride"] == changes[-1][1] > 1

    # Pinned: every step, however much it costs.
    events = _tiny_training(tmp_path / "pinned", 3 * WINDOW_SECONDS + 1.0, sharpness_budget=0.002, adaptive_stride=False)
    steps = [e["step"] for e in events if e["kind"] == "step"]
    assert steps == list(range(len(steps))) and len(steps) > 3 * WINDOW_STEPS
    assert [e for e in events if e["kind"] == "warning"] == []
    assert {e["stride"] for e in events if e["kind"] == "overhead"} == {1}
