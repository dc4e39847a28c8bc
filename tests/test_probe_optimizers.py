"""The probe through optimizer wrappers (Accelerate, Lightning, ZeRO) and on steps given a closure."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from framework_support import events, flat, norm, require
from probes import Probe
from probes.optimizers import torch_optimizer

torch.set_num_threads(1)


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(5, 4, generator=g)
        out.append((x, (x[:, 0] > 0).long()))
    return out


@pytest.fixture
def accelerate() -> Any:
    """The accelerate package, with its process-wide state reset after the test."""
    module = require("accelerate")
    yield module
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_an_accelerate_loop_with_accumulation_clipping_and_a_scheduler(tmp_path: Path, accelerate: Any) -> None:
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=2, cpu=True)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    x = torch.cat([b[0] for b in batches(5)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=5)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    assert type(optimizer).__name__ == "AcceleratedOptimizer"
    expected, losses = [], []
    with Probe(model, optimizer, tmp_path / "run", system_stats=False) as probe:
        for _ in range(2):
            for inputs, targets in loader:  # 5 batches: optimizer steps after 2, 2 and 1 of them
                with accelerator.accumulate(model):
                    loss = F.cross_entropy(model(inputs), targets)
                    accelerator.backward(loss)
                    losses.append(loss.item())
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 0.4)
                        before = flat(model.parameters())
                        expected.append([sum(losses) / len(losses), norm(p.grad for p in model.parameters()),
                                         optimizer.param_groups[0]["lr"], before])
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:  # once per optimizer step, with its micro-batches' mean loss
                    probe.step(sum(losses) / len(losses))
                    losses = []
                    expected[-1][3] = float((flat(model.parameters()) - expected[-1][3]).norm())
    steps = events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(6))
    for event, (loss, grad, lr, update) in zip(steps, expected):
        assert math.isclose(event["loss"], loss, rel_tol=1e-9)
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-5)
        assert event["lr"] == [pytest.approx(lr, rel=1e-12)]
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4)
    assert [e["lr"][0] for e in steps] == pytest.approx([0.5 * 0.7**k for k in range(6)])
    assert events(tmp_path / "run", "warning") == []  # the probe did not disable itself


def test_the_wrapped_torch_optimizer_is_found(accelerate: Any) -> None:
    lightning = require("lightning.pytorch")
    optimizer = torch.optim.Adam(small_model().parameters())
    accelerate.Accelerator(cpu=True)
    accelerated = accelerate.optimizer.AcceleratedOptimizer(optimizer, device_placement=False)
    lightning_optimizer = lightning.core.optimizer.LightningOptimizer(optimizer)
    assert torch_optimizer(optimizer) is optimizer
    assert torch_optimizer(accelerated) is optimizer
    assert torch_optimizer(lightning_optimizer) is optimizer
    assert torch_optimizer(accelerate.optimizer.AcceleratedOptimizer(lightning_optimizer, device_placement=False)) is optimizer
    with pytest.raises(TypeError, match=r"^dict is not a torch.optim.Optimizer and wraps none in \.optimizer"):
        torch_optimizer({"lr": 0.1})


def test_an_object_that_is_no_optimizer_disables_the_probe_once_and_training_goes_on(tmp_path: Path, capsys: Any) -> None:
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    class Handle:  # holds the optimizer where no wrapper attribute says so
        def __init__(self) -> None:
            self.param_groups = optimizer.param_groups
            self.inner = optimizer

    probe = Probe(model, Handle(), tmp_path / "run", system_stats=False)
    for x, y in batches(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss)
    probe.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lrtui probe: probe disabled (TypeError: Handle is not a torch.optim.Optimizer and wraps none in "
                   ".optimizer, ._optimizer, .optim: pass the torch optimizer the training steps); training continues"]


def test_a_closure_step_is_measured_after_its_closure_computed_the_gradients(tmp_path: Path) -> None:
    """``optimizer.step(closure)``: the gradients exist only once the optimizer called the closure."""
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    expected = []
    with Probe(model, optimizer, tmp_path / "run", system_stats=False) as probe:
        for x, y in batches(5):

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)  # new .grad tensors every step, as Lightning's
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
                expected.append((norm(p.grad for p in model.parameters()), flat(model.parameters())))
                return loss

            loss = optimizer.step(closure)
            probe.step(loss)
            expected[-1] = (expected[-1][0], float((flat(model.parameters()) - expected[-1][1]).norm()))
    steps = events(tmp_path / "run", "step")
    assert len(steps) == 5
    for event, (grad, update) in zip(steps, expected):
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-5)
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4)


def test_lbfgs_calls_its_closure_many_times_and_counts_one_step(tmp_path: Path) -> None:
    model = small_model()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    x, y = batches(1)[0]
    first_calls = []
    with Probe(model, optimizer, tmp_path / "run", system_stats=False) as probe:
        for _ in range(3):
            calls: list[float] = []

            def closure(calls: list[float] = calls) -> torch.Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                calls.append(norm(p.grad for p in model.parameters()))
                return loss

            loss = optimizer.step(closure)
            assert len(calls) > 1
            first_calls.append(calls[0])
            probe.step(loss)
    steps = events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == [0, 1, 2]
    # The gradient at the weights the step started from (the closure's first call).
    assert [e["grad_norm"] for e in steps] == pytest.approx(first_calls, rel=1e-5)


ZERO_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from probes import Probe

    def worker(rank, base, port):
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        torch.manual_seed(0)
        ddp = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3)))
        optimizer = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.SGD, lr=0.1, momentum=0.9)
        probe = Probe(ddp, optimizer, os.path.join(base, "run"), system_stats=False)
        g = torch.Generator().manual_seed(100 + rank)
        seen = []
        for _ in range(4):
            x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
            loss = torch.nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad(); loss.backward()
            before = torch.cat([p.detach().reshape(-1) for p in ddp.parameters()]).double()
            grad = torch.cat([p.grad.reshape(-1) for p in ddp.parameters()]).double().norm().item()
            optimizer.step(); probe.step(loss)
            after = torch.cat([p.detach().reshape(-1) for p in ddp.parameters()]).double()
            seen.append([grad, (after - before).norm().item()])
        probe.close()
        shard = sum(p.numel() for group in optimizer.optim.param_groups for p in group["params"])
        total = sum(p.numel() for p in ddp.parameters())
        if rank == 0:
            with open(os.path.join(base, "seen.json"), "w") as f:
                json.dump({"seen": seen, "shard": shard, "total": total}, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        # Forked: the ranks start with torch already imported (spawn would import it twice more).
        mp.start_processes(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True, start_method="fork")
    """
)


def test_zero_redundancy_optimizer_logs_the_full_gradient_and_update(tmp_path: Path) -> None:
    script = tmp_path / "zero_worker.py"
    script.write_text(ZERO_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(port)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "seen.json").read_text())
    assert report["shard"] < report["total"]  # rank 0's own optimizer holds only part of the model
    steps = events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == [0, 1, 2, 3]
    for event, (grad, update) in zip(steps, report["seen"]):
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-5)
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4)
