"""A real training loop with the probe attached, stepped by the test, for the control tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from lrtui.control import COMMANDS_DIR, CONTROL_DIR, Command, new_command_id, write_command
from lrtui.runlog.format import read_meta
from probes import Probe
from probes.control import LOOK_EVERY


class Training:
    """SGD on a small regression, one optimizer step per ``step()``, with ``Probe(**probe_args)``.

    ``scheduler`` is ``None``, a scheduler factory ``f(optimizer)``, or the name of one in
    ``make_scheduler``. The test writes commands with ``send`` and then calls ``step_past_look``,
    which waits out the probe's look interval first: the command is taken at exactly that step.
    """

    def __init__(self, run_dir: Path, *, groups: int = 1, scheduler: Any = None, **probe_args: Any) -> None:
        torch.manual_seed(0)
        self.run_dir = Path(run_dir)
        self.layers = [torch.nn.Linear(5, 5) for _ in range(groups)]
        self.model = torch.nn.Sequential(*self.layers)
        self.optimizer = torch.optim.SGD(
            [{"params": m.parameters(), "lr": 0.1 / 10 ** i} for i, m in enumerate(self.layers)], lr=0.1)
        self.scheduler = scheduler(self.optimizer) if callable(scheduler) else None
        self.x, self.y = torch.randn(64, 5), torch.randn(64, 5)
        probe_args.setdefault("sharpness_budget", 0)
        probe_args.setdefault("system_stats", False)
        probe_args.setdefault("adaptive_stride", False)
        self.probe = Probe(self.model, self.optimizer, self.run_dir, **probe_args)
        self.run_dir = self.probe.run_dir  # a sibling if the directory already held a run
        self.lrs: list[list[float]] = []  # the LRs each step ran with
        self.steps = 0

    @property
    def run_id(self) -> str:
        return read_meta(self.run_dir)["run_id"]

    @property
    def queue(self) -> Path:
        return self.run_dir / CONTROL_DIR / COMMANDS_DIR

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            batch = torch.randint(0, 64, (16,))
            loss = torch.nn.functional.mse_loss(self.model(self.x[batch]), self.y[batch])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.lrs.append([float(g["lr"]) for g in self.optimizer.param_groups])
            if self.scheduler is not None:
                self.scheduler.step()
            self.probe.step(loss)
            self.steps += 1

    def step_past_look(self) -> int:
        """Wait until the probe looks at its commands at the next step, take that step; returns it."""
        time.sleep(LOOK_EVERY + 0.05)
        self.step()
        return self.steps - 1

    def send(self, action: str, **fields: Any) -> str:
        command = Command(new_command_id(), self.run_id, action, **fields)
        write_command(self.run_dir, command)
        return command.id

    def close(self) -> list[dict[str, Any]]:
        """Close the probe; returns the run's events."""
        self.probe.close()
        return events(self.run_dir)


def events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    lines = (Path(run_dir) / "events.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [e for e in out if kind is None or e["kind"] == kind]


def write_raw(queue: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    """A command file written by hand (no protocol helper), with ``mode``."""
    path = queue / name
    path.write_bytes(data)
    path.chmod(mode)
    return path
