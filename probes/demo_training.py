"""The child process of `lrtui demo`: full-batch GD on the digits CNN, sharpness climbing to 2/η.

Run as ``python -m probes.demo_training RUN_DIR --steps N``. Plain GD at η = 1 starts with
sharpness near 0.9 and sharpens to the stability threshold 2/η = 2 within about a hundred steps
(edge of stability), so a new user sees every panel move within a minute on CPU.
"""

from __future__ import annotations

import argparse
import signal
import sys

import torch

from probes.tasks.training import train_digits

DEMO_LR = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.demo_training")
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:  # finish the step, close the run cleanly
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    train_digits(args.run_dir, "gd", DEMO_LR, steps=args.steps, n_train=600, log_every=50,
                 extra={"demo": True}, on_step=lambda step, loss: not stop["now"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
