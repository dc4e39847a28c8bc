"""A small real training with the probe, ended in the way the first argument says; for the lifecycle tests.

    python lifecycle_training.py MODE RUN_DIR [STEPS] [--resume] [--start-step K] [--go FILE] [--no-probe]

MODE: ``close`` (probe.close()), ``with`` (a ``with Probe`` block), ``raise`` (the README's plain
loop, no ``with``, raises ValueError at the last step), ``raise-with`` (the same inside ``with``),
``exit`` (never closes: interpreter exit), ``stall`` (after STEPS steps it waits for SIGTERM or
SIGINT, the probe still open), ``catch-int`` (a SIGINT at STEPS is caught, training goes on
STEPS more steps), ``own-term`` (the user's own SIGTERM handler, installed before the probe).
Prints ``run_dir PATH`` once the probe exists, ``stepped N`` after each step (flushed stdout),
``caught`` when ``catch-int`` caught its KeyboardInterrupt. ``--go FILE`` waits for FILE to exist
before making the probe (two processes started at once).
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
    parser.add_argument("mode")
    parser.add_argument("run_dir")
    parser.add_argument("steps", nargs="?", type=int, default=20)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--start-step", type=int)
    parser.add_argument("--go")
    parser.add_argument("--no-probe", action="store_true")
    args = parser.parse_args()
    from probes import Probe

    if args.mode == "own-term":
        def own(signum: int, frame: object) -> None:
            print("own handler", flush=True)
            os._exit(7)
        signal.signal(signal.SIGTERM, own)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    if args.go:
        while not os.path.exists(args.go):
            time.sleep(0.001)
    run_dir = os.fsdecode(os.fsencode(args.run_dir))
    kwargs = dict(system_stats=False, sharpness_budget=0.0, adaptive_stride=False, resume=args.resume,
                  start_step=args.start_step)
    probe = None
    if not args.no_probe:
        probe = Probe(model, optimizer, run_dir, **kwargs)
        print("run_dir", os.fsencode(probe.run_dir).hex(), flush=True)
    if args.mode == "with":
        assert probe is not None
        with probe:
            train(model, optimizer, probe, args.steps)
        return
    if args.mode == "raise-with":
        assert probe is not None
        with probe:
            train(model, optimizer, probe, args.steps, raise_at=args.steps - 1)
        return
    if args.mode == "catch-int":
        try:
            train(model, optimizer, probe, args.steps)
            print("waiting", flush=True)
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            print("caught", flush=True)
        train(model, optimizer, probe, args.steps, first=args.steps)
        if probe is not None:
            probe.close()
        return
    train(model, optimizer, probe, args.steps, raise_at=args.steps - 1 if args.mode == "raise" else None)
    if args.mode in ("stall", "own-term"):
        print("waiting", flush=True)
        while True:
            time.sleep(0.01)
    if args.mode == "close" and probe is not None:
        probe.close()


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, probe: object, steps: int,
          raise_at: int | None = None, first: int = 0) -> None:
    gen = torch.Generator().manual_seed(first)
    for step in range(first, first + steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if probe is not None:
            probe.step(loss)  # type: ignore[attr-defined]
        print("stepped", step, flush=True)
        if step == raise_at:
            raise ValueError(f"bad batch at step {step}")


if __name__ == "__main__":
    sys.exit(main())
