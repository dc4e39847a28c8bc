"""The probe on a model compiled with torch.compile: training runs compiled, sharpness runs eagerly.

The backend is ``aot_eager``: it goes through AOTAutograd, the layer whose compiled backward has no
double backward (the reason the probe runs its own passes eagerly), without inductor's C++ code
generation, which costs 20+ s per model on a 2-core machine and changes nothing the probe sees.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from probes import Probe
from probes.compiled import NOTICE, is_compiled
from test_probe_sharpness import _exact_hessian

torch.set_num_threads(1)
STEPS = 4


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(5, 12)
        self.b = torch.nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def _compiled(how: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what the loop calls, the plain module holding the parameters)."""
    torch.manual_seed(0)
    net = Net()
    if how == "wrapper":
        return torch.compile(net, backend="aot_eager"), net
    if how == "in-place":
        net.compile(backend="aot_eager")
        return net, net
    net.a = torch.compile(net.a, backend="aot_eager")  # a compiled submodule
    return net, net


@pytest.mark.parametrize("how", ["wrapper", "in-place", "submodule", "hessian_loss"])
def test_a_compiled_model_trains_with_the_probe_and_gets_exact_sharpness(tmp_path: Path, how: str) -> None:
    model, net = _compiled("wrapper" if how == "hessian_loss" else how)
    assert is_compiled(model)
    criterion = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 5, generator=gen), torch.randint(0, 3, (48,), generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # A user's own closure that calls the compiled model: the probe runs it eagerly too.
    closures = {"hessian_loss": lambda: criterion(model(x), y)} if how == "hessian_loss" else {"loss_fn": criterion, "hessian_batch": (x, y)}
    losses, exact = [], {}
    with Probe(model, optimizer, tmp_path / "run", sharpness_budget=1.0, system_stats=False, **closures) as probe:
        for step in range(STEPS):
            loss = criterion(model(x[:24]), y[:24])
            assert type(loss.grad_fn).__name__ == "NllLossBackward0"
            if how == "wrapper":  # the training pass itself is the compiled graph
                assert "Compiled" in type(model(x[:2]).grad_fn).__name__
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            probe.step(loss)
            losses.append(float(loss.detach()))
            plain = Net()
            plain.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in net.state_dict().items()})
            hessian, _ = _exact_hessian(plain.double(), criterion, x.double(), y)
            exact[step] = float(torch.linalg.eigvalsh(hessian)[-1])
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(STEPS))
    assert all(math.isclose(e["loss"], want, rel_tol=1e-6) for e, want in zip(steps, losses))
    top = {e["step"]: e["value"] for e in _events(tmp_path / "run", "sharpness") if e["method"] == "hessian"}
    assert sorted(top) == list(range(STEPS))
    for step, value in top.items():
        assert abs(value - exact[step]) <= 0.01 * exact[step], (step, value, exact[step])
    warnings = _events(tmp_path / "run", "warning")
    assert [(w["source"], w["message"]) for w in warnings] == [("compile", NOTICE)]  # said once


def test_an_uncompiled_model_gets_no_notice(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    assert not is_compiled(model) and not is_compiled(torch.nn.parallel.DataParallel(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with Probe(model, optimizer, tmp_path / "run", loss_fn=torch.nn.functional.cross_entropy, hessian_batch=(x, y),
               sharpness_budget=1.0, system_stats=False) as probe:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        probe.step(loss)
    assert _events(tmp_path / "run", "warning") == []
    assert _events(tmp_path / "run", "sharpness")
