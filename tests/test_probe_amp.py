"""The probe under mixed precision: GradScaler's skipped steps, unscaled gradient norms, bf16 autocast."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from lrtui.cli import main
from lrtui.runlog import load_run
from probes import Probe
from test_probe_sharpness import _exact_hessian

torch.set_num_threads(1)

STEPS = 14
#: Steps whose gradients a hook turns into inf (3) and NaN (8): the scaler must skip both.
OVERFLOW = {3: math.inf, 8: math.nan}


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def _train_with_scaler(run: Path, *, fused: bool, probe_before_update: bool, stride: int = 1,
                       init_scale: float = 1024.0) -> list[dict]:
    """A real fp16-autocast loop on CPU with ``torch.amp.GradScaler``; returns what the loop saw per step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    criterion = torch.nn.CrossEntropyLoss()
    at = {"step": 0}
    model[0].weight.register_hook(lambda g: g * OVERFLOW[at["step"]] if at["step"] in OVERFLOW else g)
    gen = torch.Generator().manual_seed(1)
    seen = []
    with Probe(model, optimizer, run, scaler=scaler, stride=stride, system_stats=False) as probe:
        for step in range(STEPS):
            at["step"] = step
            x, y = torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = criterion(model(x), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            before = [p.detach().clone() for p in model.parameters()]
            scaler.step(optimizer)
            # After scaler.step the gradients are unscaled (a fused optimizer unscales them in place).
            grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
            moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
            if probe_before_update:
                probe.step(loss)
                scaler.update()
            else:
                scaler.update()
                probe.step(loss)
            seen.append({"loss": float(loss.detach()), "grad": grad, "moved": moved, "scale": scaler.get_scale()})
    return seen


@pytest.mark.parametrize(
    ("fused", "probe_before_update"),
    [(False, False), (False, True), (True, False)],
    ids=["adam-probe-after-update", "adam-probe-before-update", "fused-adam"],
)
def test_skipped_steps_are_logged_as_skipped_with_unscaled_norms(tmp_path: Path, fused: bool, probe_before_update: bool) -> None:
    seen = _train_with_scaler(tmp_path / "run", fused=fused, probe_before_update=probe_before_update)
    # The loop itself: the scaler skipped exactly the overflowing steps and halved its scale each time.
    assert [s["moved"] for s in seen] == [k not in OVERFLOW for k in range(STEPS)]
    assert seen[-1]["scale"] == 1024.0 / 4
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(STEPS))  # a skipped step keeps its own index
    for k, (event, truth) in enumerate(zip(steps, seen)):
        assert math.isclose(event["loss"], truth["loss"], rel_tol=1e-6)
        assert event["lr"] == [1e-2]
        if k in OVERFLOW:
            assert event["skipped"] is True
            assert "grad_norm" not in event and "update_norm" not in event  # overflowed: no value
        else:
            assert "skipped" not in event
            # The norm of the unscaled gradients: the scaled ones are 1024x larger.
            assert math.isclose(event["grad_norm"], truth["grad"], rel_tol=1e-5), (k, event, truth)
            assert event["update_norm"] > 0
    assert _events(tmp_path / "run", "warning") == []


def test_skipped_steps_off_the_stride_are_logged_and_the_loss_scale_does_not_change_the_norms(tmp_path: Path) -> None:
    seen = _train_with_scaler(tmp_path / "a", fused=False, probe_before_update=False, stride=2)
    _train_with_scaler(tmp_path / "b", fused=False, probe_before_update=False, stride=2, init_scale=2.0**14)
    steps = _events(tmp_path / "a", "step")
    # Measured: the even steps; skipped: 3 (odd, off the stride) and 8, each logged once.
    assert [e["step"] for e in steps] == [0, 2, 3, 4, 6, 8, 10, 12]
    assert [e["step"] for e in steps if e.get("skipped")] == [3, 8]
    assert math.isclose(steps[2]["loss"], seen[3]["loss"], rel_tol=1e-6)
    other = {e["step"]: e for e in _events(tmp_path / "b", "step")}
    for e in steps:
        if not e.get("skipped"):
            assert math.isclose(e["grad_norm"], other[e["step"]]["grad_norm"], rel_tol=1e-4)


def test_the_skipped_field_survives_every_reader(tmp_path: Path) -> None:
    _train_with_scaler(tmp_path / "run", fused=False, probe_before_update=False)
    for fields in (None, ("step", "loss", "skipped")):
        table = load_run(tmp_path / "run", step_fields=fields).table("step")
        skipped = table["skipped"]
        assert [int(s) for s in table["step"][skipped == 1]] == sorted(OVERFLOW)
        assert int((skipped == 1).sum()) == len(OVERFLOW) and int(math.isnan(skipped[0])) == 1


def _advise_json(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    status = main(["advise", "--json", str(run)])
    out = capsys.readouterr().out
    return status, json.loads(out) if out.strip() else {}


def test_a_finite_loss_on_a_skipped_step_in_the_log_is_what_the_advisor_reads(tmp_path: Path) -> None:
    """What contract 4 gives the advisor: skipped steps with finite losses and no gradient norm."""
    _train_with_scaler(tmp_path / "run", fused=True, probe_before_update=False)
    skipped = [e for e in _events(tmp_path / "run", "step") if e.get("skipped")]
    assert len(skipped) == len(OVERFLOW) and all(math.isfinite(e["loss"]) for e in skipped)
    assert all("grad_norm" not in e for e in skipped)


# Contract 4: the advisor never counts a skipped step as divergence unless its loss is non-finite;
# contract 5: the skipped step's absent grad_norm is no value, not a non-finite one. (The advisor
# before issue 18 read the absent grad_norm as NaN and said "diverged: non-finite gradient norm".)
def test_the_advisor_does_not_call_a_run_with_skipped_steps_diverged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _train_with_scaler(tmp_path / "run", fused=False, probe_before_update=False)
    status, result = _advise_json(tmp_path / "run", capsys)
    assert result["diverged_at_step"] is None, result["alerts"]
    assert status == 0


def test_the_advisor_still_calls_a_non_finite_loss_on_a_skipped_step_diverged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The other half of contract 4: a skipped step whose loss itself is NaN is a divergence."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    with Probe(model, optimizer, tmp_path / "run", scaler=scaler, system_stats=False) as probe:
        for step in range(12):
            x = torch.randn(16, 4) * (math.nan if step >= 6 else 1.0)  # the data goes bad: NaN loss from step 6
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(x).float().square().mean()
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            probe.step(loss)
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps if e.get("skipped")] == list(range(6, 12))
    assert all(e["loss"] == "NaN" for e in steps[6:])
    status, result = _advise_json(tmp_path / "run", capsys)
    assert status == 3 and result["diverged_at_step"] == 6, result["alerts"]


def test_sharpness_under_bf16_autocast_is_computed_in_float32(tmp_path: Path) -> None:
    """A float32 model trained under bf16 autocast, probe.step called inside the autocast block (the
    worst case): the probe's Hessian passes run with autocast off, so sharpness matches the exact
    float64 Hessian to 0.3% (in bf16 the batch sharpness is off by up to 2.5% here)."""
    criterion = torch.nn.CrossEntropyLoss()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    exact: dict[int, dict[str, float]] = {}
    with Probe(model, optimizer, tmp_path / "run", loss_fn=criterion, hessian_batch=(x, y), sharpness_budget=1.0,
               tolerance=1e-4, max_iters=50, system_stats=False) as probe:
        for step in range(4):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = criterion(model(x[:32]), y[:32])
                assert model(x[:2]).dtype == torch.bfloat16  # autocast is really on
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss)
            hessian, g = _exact_hessian(copy.deepcopy(model).double(), criterion, x.double(), y)
            exact[step] = {"hessian": float(torch.linalg.eigvalsh(hessian)[-1]), "batch": float(g @ hessian @ g / (g @ g))}
    events = _events(tmp_path / "run", "sharpness")
    assert {(e["step"], e["method"]) for e in events} == {(k, m) for k in range(4) for m in ("hessian", "batch")}
    for e in events:
        want = exact[e["step"]][e["method"]]
        assert abs(e["value"] - want) <= 3e-3 * abs(want), (e, want)
    steps = _events(tmp_path / "run", "step")
    assert len(steps) == 4 and all(math.isfinite(e["loss"]) and e["grad_norm"] > 0 for e in steps)


def test_a_probe_step_without_any_scaler_step_is_not_a_skip(tmp_path: Path) -> None:
    """Gradient accumulation with probe.step called at every micro-batch (too often, but it
    happens): the calls between two scaler steps are not skipped steps; real skips still are."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    at = {"step": 0}
    model.weight.register_hook(lambda g: g * math.inf if at["step"] == 2 else g)
    with Probe(model, optimizer, tmp_path / "run", scaler=scaler, system_stats=False) as probe:
        for step in range(5):
            at["step"] = step
            optimizer.zero_grad()
            for _ in range(2):  # two micro-batches per optimizer step
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = model(torch.randn(8, 4)).float().square().mean()
                scaler.scale(loss / 2).backward()
                probe.step(loss)  # once too often: also after the first micro-batch
            scaler.step(optimizer)
            scaler.update()
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(5))
    assert [e["step"] for e in steps if e.get("skipped")] == [2]
