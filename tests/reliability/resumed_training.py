"""A small real training with the probe that a test resumes; for the readers' tests of resumed runs.

    python resumed_training.py RUN_DIR STEPS [--resume --start-step K] [--tag X] [--stall] [--crash]

Logs a ``metric`` event (``tag`` X, ``acc``) at every step besides the step events, so a reader
can tell the first process's events from the resuming one's. ``--stall``: after its steps, print
``waiting`` and wait (the probe open, the lock held) until killed. ``--crash``: after its steps,
die by SIGKILL (no end record). Otherwise ``probe.close()``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import torch

torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--start-step", type=int)
    parser.add_argument("--tag", default="first")
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--crash", action="store_true")
    args = parser.parse_args()
    from probes import Probe

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = Probe(model, optimizer, args.run_dir, system_stats=False, sharpness_budget=0.0,
                  adaptive_stride=False, resume=args.resume, start_step=args.start_step)
    gen = torch.Generator().manual_seed(len(args.tag))
    first = args.start_step or 0
    for _ in range(first, first + args.steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss)
        probe.log(tag=args.tag, acc=0.5)
    if args.crash:
        assert probe.flush(timeout=60.0)  # every event in the file, then no end record
        os.kill(os.getpid(), signal.SIGKILL)
    if args.stall:
        print("waiting", flush=True)
        while True:
            time.sleep(0.01)
    probe.close()


if __name__ == "__main__":
    sys.exit(main())
