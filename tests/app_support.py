"""Recorded runs with known content for the app's tests and benchmark (written with RunWriter)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lrtui.runlog import RunWriter

#: A fixed start time so screens and snapshots never depend on the clock.
T0 = 1_795_840_000.0


def sgd_meta(name: str, lr: float, momentum: float = 0.0) -> dict[str, Any]:
    return {
        "name": name,
        "started_at": T0,
        "host": "recorded-elsewhere",
        "pid": 0,
        "argv": ["train.py", f"--lr={lr}"],
        "torch_version": "2.13.0",
        "device": "cuda:0",
        "world_size": 1,
        "rank": 0,
        "param_count": 1_234,
        "optimizer": {"class": "SGD", "param_groups": [
            {"lr": lr, "momentum": momentum, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0,
             "params": 1234, "scale_invariant": False}]},
        "probe": {"stride": 1},
        "extra": {},
    }


def run_events(steps: int, lr: float, *, diverge_at: int | None = None, seed: int = 0,
               sharpness_every: int = 10, system_every: int = 50, dt: float = 0.01) -> list[dict[str, Any]]:
    """Events of a plausible SGD run: loss falling to a noisy plateau, sharpness rising to 2/lr."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    threshold = 2.0 / lr
    for step in range(steps):
        t = T0 + step * dt
        loss = 0.1 + 0.6 * math.exp(-step / (steps / 5)) + 0.02 * float(rng.standard_normal())
        grad = 1.0 + 0.1 * float(rng.standard_normal())
        if diverge_at is not None and step >= diverge_at:
            loss, grad = (math.inf if step == diverge_at else math.nan), math.nan
        events.append({"kind": "step", "step": step, "time": t, "loss": loss, "grad_norm": grad,
                       "update_norm": lr * grad, "weight_norm": 1.0, "lr": [lr], "effective_lr": [None]})
        if sharpness_every and step % sharpness_every == 0:
            value = threshold * min(1.0, 0.2 + step / (steps * 0.6))
            events.append({"kind": "sharpness", "step": step, "time": t + dt / 2, "method": "hessian",
                           "value": value, "hvps": 6, "seconds": 0.004, "tolerance": 1e-3,
                           "converged": True, "warm_start": step > 0})
        if system_every and step % system_every == 0:
            events.append({"kind": "system", "step": step, "time": t + dt / 3, "source": "probe",
                           "cpu_percent": 99.0, "rss": 2_147_483_648, "gpu_index": 0,
                           "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_util": 91.0,
                           "gpu_mem_used": 40 * 2**30, "gpu_mem_total": 80 * 2**30, "gpu_temp": 63.0,
                           "gpu_power": 480.0})
    return events


def write_run(run_dir: Path, steps: int = 400, lr: float = 0.05, *, diverge_at: int | None = None,
              seed: int = 0, finished: bool = True, **kwargs: Any) -> Path:
    """Write a complete recorded run (events with fixed times, then an end record)."""
    writer = RunWriter(run_dir, sgd_meta(run_dir.name, lr))
    events = run_events(steps, lr, diverge_at=diverge_at, seed=seed, **kwargs)
    for event in events:
        writer.write_event(event)
    if finished:
        writer.close()
    else:  # a run that stopped without its end record (its writer thread is a daemon)
        writer.flush()
    return run_dir


def write_two_run_sweep(root: Path, steps: int, diverge_at: int) -> Path:
    """A sweep of two recorded runs: lr 0.05 converging, lr 0.2 diverging at ``diverge_at``."""
    write_run(root / "lr-0.05", steps, 0.05, seed=3)
    write_run(root / "lr-0.2", steps, 0.2, diverge_at=diverge_at, seed=4)
    return root


def screen_text(app: Any) -> str:
    """The characters on the app's screen now, one line per row (what a user reads)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())  # noqa: SLF001


async def wait_for(pilot: Any, condition: Any, timeout: float = 30.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds (a
    bound on liveness, generous because a shared 2-core machine can be several times slower at times)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def headless(test: Any) -> Any:
    """Run an ``async def`` test (driving the app with its Pilot) in a fresh event loop."""
    import asyncio
    import functools

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
