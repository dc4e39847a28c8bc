"""A real training run with the probe attached, broken on purpose mid-run; prints what happened as JSON.

Run as ``python fault_training.py WORKDIR FAULT[:plain] ...``; FAULT is one of none, unwritable,
disk_full, nvml, hvp_raises, hvp_once; ``:plain`` runs the same training (the same mid-run model
change included) without the probe. torch is imported once, then every run is a forked child of its
own, so a fault (a file-size limit, a revoked descriptor) cannot leak into another run. Each child
leaves ``WORKDIR/NAME/result.json`` (final weights' digest) and ``WORKDIR/NAME/stderr``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

#: Optimizer step at which the fault is injected (the time-based NVML fault aside).
FAULT_STEP = 40
STEPS = 100


class _SquareOnce(torch.autograd.Function):
    """x*x whose backward cannot be differentiated again, like many fused kernels."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * x + grad * x  # what autograd computes for x*x, so gradients stay bitwise equal


class Net(torch.nn.Module):
    """A small MLP with dropout (so a probe that touched the RNG would change the weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 32)
        self.drop = torch.nn.Dropout(0.2)
        self.out = torch.nn.Linear(32, 1)
        self.centers = torch.nn.Parameter(torch.randn(4, 32) * 0.1)
        # Switched on mid-run by the HVP faults: a path whose second derivative raises
        # (torch.cdist has no double backward), or one that cannot be differentiated twice.
        self.distance_features = False
        self.once_differentiable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.hidden(x)))
        y = self.out(h)
        if self.distance_features:
            y = y + 0.01 * torch.cdist(h, self.centers, p=1.0).mean(dim=1, keepdim=True)
        return _SquareOnce.apply(y) if self.once_differentiable else y * y


class NVMLError(Exception):
    """The fake NVML's error type (pynvml's NVMLError has the same role)."""


def fake_nvml(broken: dict[str, bool]) -> types.ModuleType:
    """An NVML module with one H100 that answers until ``broken["now"]`` is set, then raises on
    every call, as a GPU that fell off the bus does (the real pynvml cannot fail on demand here)."""
    nvml = types.ModuleType("fake_pynvml")
    nvml.NVMLError = NVMLError
    nvml.NVML_TEMPERATURE_GPU = 0

    def answer(value: Any) -> Any:
        def call(*_args: Any) -> Any:
            if broken["now"]:
                raise NVMLError("Unknown Error: GPU is lost")
            return value
        return call

    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = answer(1)
    nvml.nvmlDeviceGetHandleByIndex = answer("handle0")
    nvml.nvmlDeviceGetName = answer("NVIDIA H100 80GB HBM3")
    nvml.nvmlDeviceGetUtilizationRates = answer(types.SimpleNamespace(gpu=87, memory=40))
    nvml.nvmlDeviceGetMemoryInfo = answer(types.SimpleNamespace(used=30 << 30, total=80 << 30, free=50 << 30))
    nvml.nvmlDeviceGetTemperature = answer(64)
    nvml.nvmlDeviceGetPowerUsage = answer(412_000)
    return nvml


def revoke_log(run_dir: Path) -> None:
    """Make the run log unwritable mid-run: the directory is replaced by a file, and the writer's
    open descriptor now refers to a read-only file (as after a forced unmount or a stale NFS
    handle). As root, chmod would not stop the writes."""
    target = os.path.realpath(run_dir / "events.jsonl")
    shutil.rmtree(run_dir)
    run_dir.write_text("not a directory any more\n")
    read_only = os.open("/dev/null", os.O_RDONLY)
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith(target):  # "... (deleted)"
            os.dup2(read_only, int(fd))
    os.close(read_only)


def train(workdir: Path, fault: str, with_probe: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    data_gen = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(256, 8, generator=data_gen), torch.rand(256, 1, generator=data_gen)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run_dir = workdir / "run"
    probe = None
    broken = {"now": False}
    if with_probe:
        from lrtui.system import SystemSampler
        from probes import Probe

        probe = Probe(
            model,
            optimizer,
            run_dir,
            loss_fn=torch.nn.functional.mse_loss,
            hessian_batch=(inputs[:64], targets[:64]),
            sharpness_budget=0.3,  # measure often, so a broken HVP is met early
            gpu=0 if fault == "nvml" else None,
            system_stats=SystemSampler(nvml=fake_nvml(broken)) if fault == "nvml" else True,
            flush_every=4,
            adaptive_stride=False,  # one warning per fault, and no stride notice among them
        )
    began = time.monotonic()
    steps = int(os.environ.get("FAULT_TRAINING_STEPS", STEPS))
    for step in range(steps):
        if step == FAULT_STEP and fault == "unwritable" and probe is not None:
            probe.writer.flush()
            revoke_log(run_dir)
        elif step == FAULT_STEP and fault == "disk_full" and probe is not None:
            probe.writer.flush()
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            size = (run_dir / "events.jsonl").stat().st_size
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 3000, resource.RLIM_INFINITY))
        elif step == FAULT_STEP and fault == "hvp_raises":
            model.distance_features = True
        elif step == FAULT_STEP and fault == "hvp_once":
            model.once_differentiable = True
        if step in (10, FAULT_STEP) and fault.startswith("hvp"):
            time.sleep(1.0)  # a stalled data loader: the probe's time budget now allows a measurement
        if fault == "nvml" and probe is not None:  # the sampler reads once a second: let it read, then break the GPU
            if step == FAULT_STEP:
                while time.monotonic() - began < 2.5:
                    time.sleep(0.05)
                broken["now"] = True
            if step == steps - 1:
                time.sleep(max(0.0, 2.5 - (time.monotonic() - began - 2.5)))
        batch = torch.randint(0, 256, (32,))  # the global RNG, which the probe must not move
        loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if probe is not None:
            probe.step(loss)
    if probe is not None:
        probe.close()
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().numpy().tobytes())
    return {"fault": fault, "probe": with_probe, "steps": steps, "weights_sha256": digest.hexdigest(),
            "seconds": round(time.monotonic() - began, 2)}


def run_forked(workdir: Path, name: str) -> int:
    """Train ``name`` ("FAULT" or "FAULT:plain") in a forked child; returns its pid."""
    fault, _, plain = name.partition(":")
    out = workdir / name.replace(":", "-")
    out.mkdir(parents=True)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        err = os.open(out / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(err, 2)
        result = train(out, fault, with_probe=plain != "plain")
        (out / "result.json").write_text(json.dumps(result))
        code = 0
    except BaseException as exc:  # the test reads it; training itself must never end here
        (out / "result.json").write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    import probes  # noqa: F401  (imported once, before forking)

    workdir = Path(sys.argv[1])
    children = [run_forked(workdir, name) for name in sys.argv[2:]]
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    print(json.dumps(dict(zip(sys.argv[2:], statuses))), flush=True)
