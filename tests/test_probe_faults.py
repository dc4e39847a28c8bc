"""Fail-open: each real fault inside the probe is reported once and training goes on untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from lrtui.system import SystemSampler
from probes import Probe

torch.set_num_threads(1)


def _events(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if kind is None or e["kind"] == kind]


def _train(model: torch.nn.Module, probe: Probe | None, steps: int = 8, seconds: float = 0.0) -> torch.nn.Module:
    optimizer = probe.optimizer if probe is not None else None
    gen = torch.Generator().manual_seed(5)
    began = time.monotonic()
    step = 0
    while step < steps or time.monotonic() - began < seconds:
        x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss)
        step += 1
    probe.close()
    return model


def _stderr_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def test_unwritable_run_directory(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    reference = torch.nn.Linear(4, 1)
    reference.load_state_dict(model.state_dict())
    probe = Probe(model, torch.optim.SGD(model.parameters(), lr=0.1), blocker / "run", system_stats=False)
    _train(model, probe)
    lines = _stderr_lines(capfd)
    assert len(lines) == 1 and "cannot create run directory" in lines[0] and "training continues" in lines[0]
    assert not (blocker.parent / "run").exists()
    # The same training without a probe ends at the same weights.
    ref_probe = types.SimpleNamespace(optimizer=torch.optim.SGD(reference.parameters(), lr=0.1), step=lambda loss: None, close=lambda: None)
    _train(reference, ref_probe)  # type: ignore[arg-type]
    assert torch.equal(model.weight, reference.weight)


def test_disk_full_while_training(tmp_path: Path) -> None:
    # A child process whose files may not grow past 4 KiB: the run log hits EFBIG mid-run.
    script = textwrap.dedent(
        f"""
        import resource, signal, torch
        from probes import Probe
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # report EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        # adaptive_stride=False: the stride never depends on how fast this machine is (a loaded
        # one thinned the steps and said so in a second stderr line).
        probe = Probe(model, optimizer, {str(tmp_path / 'run')!r}, system_stats=False, flush_every=8,
                      adaptive_stride=False)
        for step in range(300):
            loss = torch.nn.functional.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 1))
            optimizer.zero_grad(); loss.backward(); optimizer.step(); probe.step(loss)
        probe.close()
        print("trained", step + 1)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trained 300"
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot write run log" in errors[0], done.stderr
    assert (tmp_path / "run" / "events.jsonl").stat().st_size <= 4096
    end = json.loads((tmp_path / "run" / "events.jsonl").read_bytes().splitlines()[-1])
    assert end["kind"] == "end" and end["status"] == "finished" and "File too large" in end["log_error"]


class _SquareOnce(torch.autograd.Function):
    """x², with a backward that cannot itself be differentiated (like many compiled kernels)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _NoDoubleBackward(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SquareOnce.apply(self.linear(x))


def test_model_without_double_backward(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = _NoDoubleBackward()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    probe = Probe(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        tmp_path / "run",
        loss_fn=torch.nn.functional.mse_loss,
        hessian_batch=(x, y),
        sharpness_budget=1.0,
        system_stats=False,
    )
    _train(model, probe, steps=6)
    lines = _stderr_lines(capfd)
    assert len(lines) == 1 and "sharpness disabled" in lines[0]
    warnings = _events(tmp_path / "run", "warning")
    assert [w["source"] for w in warnings] == ["sharpness"] and "differentiate" in warnings[0]["message"]
    assert len(_events(tmp_path / "run", "step")) == 6  # the cheap metrics go on
    assert _events(tmp_path / "run", "sharpness") == []
    assert _events(tmp_path / "run", "end")[0]["status"] == "finished"


def test_no_nvml_library_here_and_a_failing_nvml(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The real pynvml: on this machine nvmlInit raises NVMLError_LibraryNotFound.
    model = torch.nn.Linear(4, 1)
    # adaptive_stride=False: the only warnings and stderr lines are the faults (a stride notice is neither).
    probe = Probe(model, torch.optim.SGD(model.parameters(), lr=0.01), tmp_path / "real", gpu=0, adaptive_stride=False)
    _train(model, probe, seconds=1.3)
    warnings = _events(tmp_path / "real", "warning")
    assert [w["source"] for w in warnings] == ["gpu"] and "NVML" in warnings[0]["message"]
    system = _events(tmp_path / "real", "system")
    assert system and all(e["source"] == "probe" and e["rss"] > 0 and "gpu_util" not in e for e in system)
    assert len(_stderr_lines(capfd)) == 1

    # A fake NVML module that starts but then fails every call, as a GPU fallen off the bus does.
    class NVMLError(Exception):
        pass

    def broken(*args: object) -> None:
        raise NVMLError("GPU is lost")

    fake = types.ModuleType("fake_pynvml")
    fake.NVMLError = NVMLError
    fake.NVML_TEMPERATURE_GPU = 0
    fake.nvmlInit = lambda: None
    fake.nvmlShutdown = lambda: None
    fake.nvmlDeviceGetCount = broken
    model = torch.nn.Linear(4, 1)
    probe = Probe(
        model, torch.optim.SGD(model.parameters(), lr=0.01), tmp_path / "fake", gpu=0, system_stats=SystemSampler(nvml=fake),
        adaptive_stride=False,
    )
    _train(model, probe, seconds=1.3)
    warnings = _events(tmp_path / "fake", "warning")
    assert [w["source"] for w in warnings] == ["gpu"] and "GPU is lost" in warnings[0]["message"]
    assert _events(tmp_path / "fake", "system")
    assert len(_events(tmp_path / "fake", "step")) > 0
