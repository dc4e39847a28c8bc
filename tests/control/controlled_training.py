"""A real training job for the control tests, driven by the test through files, never by the clock.

Run as ``python controlled_training.py WORKDIR [--control] [--steps N] [--wait-at K ...]
[--scheduler NAME] [--groups G]``. It trains a small regression with SGD (and the probe) in
``WORKDIR/run``. Before each optimizer step K it writes ``WORKDIR/ready`` and waits until a file
appears in ``WORKDIR/run/control/commands/`` (or ``WORKDIR/go`` appears), then sleeps a little
longer than the probe's command look interval, so the probe looks at exactly step K, and removes
``ready`` (and ``go``). At the end it
writes ``WORKDIR/final.json``: each step's LRs as the optimizer held them when it stepped, and the
LRs the optimizer holds after the last step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

torch.set_num_threads(1)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, steps: int):
    sched = torch.optim.lr_scheduler
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=steps)
    if name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=steps)
    if name == "none":
        return None
    raise SystemExit(f"unknown scheduler {name}")


def main() -> None:
    from probes import Probe
    from probes.control import LOOK_EVERY

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--wait-at", type=int, nargs="*", default=[])
    parser.add_argument("--scheduler", default="none")
    parser.add_argument("--groups", type=int, default=1)
    args = parser.parse_args()
    run = args.workdir / "run"
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 6) for _ in range(args.groups)]
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD([{"params": m.parameters(), "lr": 0.1 / (10 ** i)} for i, m in enumerate(layers)],
                                lr=0.1)
    scheduler = make_scheduler(args.scheduler, optimizer, args.steps)
    inputs, targets = torch.randn(64, 6), torch.randn(64, 6)
    probe = Probe(model, optimizer, run, control=args.control, sharpness_budget=0, system_stats=False,
                  adaptive_stride=False)
    lrs = []
    for step in range(args.steps):
        if step in args.wait_at:
            (args.workdir / "ready").write_text(str(step))
            queue = run / "control" / "commands"
            deadline = time.monotonic() + 120
            while not (args.workdir / "go").exists() and not (queue.is_dir() and any(
                    not n.startswith(".") for n in os.listdir(queue))):
                if time.monotonic() > deadline:
                    raise SystemExit("no command came")
                time.sleep(0.01)
            time.sleep(LOOK_EVERY + 0.2)
            (args.workdir / "ready").unlink()
            if (args.workdir / "go").exists():
                (args.workdir / "go").unlink()
        batch = torch.randint(0, 64, (16,))
        loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lrs.append([float(g["lr"]) for g in optimizer.param_groups])  # what the step used (after the probe's hook)
        if scheduler is not None:
            scheduler.step()
        probe.step(loss)
    probe.close()
    final = {"step_lrs": lrs, "lrs_now": [float(g["lr"]) for g in optimizer.param_groups]}
    (args.workdir / "final.json").write_text(json.dumps(final))


if __name__ == "__main__":
    main()
