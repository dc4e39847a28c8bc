"""The probe's per-step metrics against values computed by hand in the same training loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lrtui.runlog import load_run
from probes import Probe, step_metrics

torch.set_num_threads(1)


def _events(run_dir: Path, kind: str) -> list[dict]:
    import json

    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def test_step_metrics_match_hand_computed_norms_and_scheduler_lr(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters(), "lr": 0.05}],
        momentum=0.9,
        weight_decay=1e-3,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    expected = []
    with Probe(model, optimizer, tmp_path / "run", stride=1, flush_every=7, system_stats=False) as probe:
        for _ in range(25):
            x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # the probe must see clipped grads
            before = [p.detach().clone() for p in model.parameters()]
            grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
            lrs = [g["lr"] for g in optimizer.param_groups]
            optimizer.step()
            probe.step(loss)
            update = math.sqrt(sum(float((p.detach().double() - b.double()).square().sum()) for p, b in zip(model.parameters(), before)))
            weight = math.sqrt(sum(float(p.detach().double().square().sum()) for p in model.parameters()))
            expected.append((loss.item(), grad, update, weight, lrs))
            scheduler.step()
        probe.log(test_acc=0.75, phase="pre-training")
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(25))
    for event, (loss, grad, update, weight, lrs) in zip(steps, expected):
        assert math.isclose(event["loss"], loss, rel_tol=1e-6)
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-5)
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4)
        assert math.isclose(event["weight_norm"], weight, rel_tol=1e-5)
        assert event["lr"] == lrs
        assert event["effective_lr"] == [None, None]
    assert steps[0]["lr"] == [0.1, 0.05] and steps[24]["lr"] == [0.025, 0.0125]  # StepLR halved twice
    metric = _events(tmp_path / "run", "metric")
    assert metric[0]["test_acc"] == 0.75 and metric[0]["phase"] == "pre-training" and metric[0]["step"] == 24
    run = load_run(tmp_path / "run")
    assert run.meta["optimizer"]["class"] == "SGD"
    assert [g["params"] for g in run.meta["optimizer"]["param_groups"]] == [6 * 16 + 16, 16 * 3 + 3]
    assert run.meta["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert _events(tmp_path / "run", "end")[0]["status"] == "finished"


def test_stride_and_a_missing_probe_step_call(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = Probe(model, optimizer, tmp_path / "run", stride=3, system_stats=False)
    for i in range(10):
        loss = model(torch.randn(8, 3)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i != 3:  # step 3 is measured but probe.step is skipped: recorded without a loss
            probe.step(loss)
    probe.close()
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == [0, 3, 6, 9]
    assert steps[1]["loss"] is None and steps[1]["grad_norm"] > 0
    assert all(e["loss"] is not None for e in steps if e["step"] != 3)


def test_context_manager_records_a_failed_run(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        with Probe(model, optimizer, tmp_path / "run", system_stats=False):
            raise KeyError("boom")
    except KeyError:
        pass
    end = _events(tmp_path / "run", "end")[0]
    assert end["status"] == "failed" and end["exception"] == "KeyError"


@pytest.mark.parametrize("engine", ["host", "host, 2 slots", "host, stride 2", "foreach", "foreach, stride 2"])
def test_both_norm_engines_agree_with_hand_computed_values_on_awkward_loops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """CPU models take their norms from numpy copies (``_HostNorms``), others from foreach kernels;
    either must give the hand-computed values through frozen-by-accident parameters (no grad),
    losses of every kind, a declared scale-invariant group, a group added mid-run and a buffer
    too small for a whole flush, a step whose ``probe.step`` was forgotten, and a stride."""
    stride = 2 if "stride 2" in engine else 1
    if engine.startswith("foreach"):
        monkeypatch.setattr(step_metrics, "FLAT_MAX_ELEMENTS", 0)
    if engine == "host, 2 slots":
        row = 3 * (4 * 8 + 8 + 8 * 2) * 4  # three float32 copies of the first two groups' weights
        monkeypatch.setattr(step_metrics, "HOST_BUFFER_BYTES", 2 * row + 1)
    torch.manual_seed(3)
    body = torch.nn.Linear(4, 8)
    head = torch.nn.Linear(8, 2, bias=False)
    unused = torch.nn.Linear(2, 2)  # trained by the optimizer, never in the loss: .grad stays None
    optimizer = torch.optim.SGD(
        [{"params": list(body.parameters()) + list(unused.parameters()), "lr": 0.05}, {"params": head.parameters(), "lr": 0.1}],
        momentum=0.5,
    )
    extra = torch.nn.Parameter(torch.randn(3))
    expected = []
    probe = Probe(body, optimizer, tmp_path / "run", scale_invariant=[False, True], flush_every=5, system_stats=False,
                  stride=stride)
    for i in range(23):
        if i == 12:
            optimizer.add_param_group({"params": [extra], "lr": 0.01})
        params = [p for g in optimizer.param_groups for p in g["params"]]
        x = torch.randn(16, 4)
        loss = head(torch.relu(body(x))).square().mean() + (extra.square().sum() if i >= 12 else 0.0)
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad.double() if p.grad is not None else torch.zeros(p.shape, dtype=torch.float64) for p in params]
        before = [p.detach().double().clone() for p in params]
        optimizer.step()
        given: object = [loss, loss.double(), float(loss.detach()), None, loss.reshape(1)][i % 5]
        if i == 6:
            given = None  # probe.step forgotten: the next optimizer step finishes it, without a loss
        else:
            probe.step(given)
        after = [p.detach().double() for p in params]
        norm = lambda ts: math.sqrt(sum(float(t.square().sum()) for t in ts))  # noqa: E731
        head_w2 = float(head.weight.detach().double().square().sum())
        expected.append((None if given is None else float(loss.detach()), norm(grads), norm([a - b for a, b in zip(after, before)]),
                         norm(after), [g["lr"] for g in optimizer.param_groups], head_w2))
    kind, capacity = type(probe.steps._norms).__name__, probe.steps._norms.capacity
    probe.close()
    assert kind == ("_ForeachNorms" if engine.startswith("foreach") else "_HostNorms")
    assert (capacity <= 2) == (engine == "host, 2 slots")
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(0, 23, stride))
    for event, (loss, grad, update, weight, lrs, head_w2) in zip(steps, expected[::stride], strict=True):
        if loss is None:
            assert event["loss"] is None
        else:
            assert math.isclose(event["loss"], loss, rel_tol=1e-6)
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-5)
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4)
        assert math.isclose(event["weight_norm"], weight, rel_tol=1e-5)
        assert event["lr"] == lrs
        assert event["effective_lr"][0] is None
        assert math.isclose(event["effective_lr"][1], lrs[1] / head_w2, rel_tol=1e-5)
    assert [len(e["lr"]) for e in steps] == [2 if i < 12 else 3 for i in range(0, 23, stride)]


@pytest.mark.parametrize("engine", ["host", "foreach"])
def test_a_weight_change_between_probe_step_and_the_next_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """A loop that rescales the weights after ``probe.step``: on CPU (``_HostNorms``) the rescale
    counts in the next step's Δw (the change between consecutive ``probe.step`` calls, as the
    README says); the foreach engine copies the weights at the next step's hook and leaves it out.
    Either way ‖w‖ is the weights at ``probe.step``."""
    if engine == "foreach":
        monkeypatch.setattr(step_metrics, "FLAT_MAX_ELEMENTS", 0)
    torch.manual_seed(5)
    model = torch.nn.Linear(5, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    flat = lambda: torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])  # noqa: E731
    expected = []
    with Probe(model, optimizer, tmp_path / "run", flush_every=4, system_stats=False) as probe:
        seen = flat()
        for i in range(10):
            loss = model(torch.randn(8, 5)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            before = flat()
            optimizer.step()
            probe.step(loss)
            after = flat()
            expected.append((float((after - (seen if engine == "host" else before)).norm()), float(after.norm())))
            seen = after  # what probe.step saw
            if i % 3 == 1:
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(0.5)
    steps = _events(tmp_path / "run", "step")
    assert len(steps) == 10
    for event, (update, weight) in zip(steps, expected):
        assert math.isclose(event["update_norm"], update, rel_tol=1e-5)
        assert math.isclose(event["weight_norm"], weight, rel_tol=1e-5)


@pytest.mark.parametrize("engine, batch", [("host", step_metrics.HOST_FLUSH_EVERY), ("foreach", step_metrics.DEVICE_FLUSH_EVERY)])
def test_default_flush_batch_of_each_norm_engine(monkeypatch: pytest.MonkeyPatch, engine: str, batch: int) -> None:
    if engine == "foreach":
        monkeypatch.setattr(step_metrics, "FLAT_MAX_ELEMENTS", 0)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = step_metrics.StepMetrics(optimizer, flush_seconds=1e9)  # flushed by count only

    def before(*args: object) -> None:  # the probe's pre-step hook, without the probe
        metrics.before_step()

    optimizer.register_step_pre_hook(before)
    x = torch.randn(8, 4)
    flushed_at = []
    for i in range(2 * batch):
        loss = model(x).square().mean()
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        events = metrics.finish_step(loss)
        if events:
            flushed_at.append((i, [e["step"] for e in events]))
    assert flushed_at == [(batch - 1, list(range(batch))), (2 * batch - 1, list(range(batch, 2 * batch)))]
