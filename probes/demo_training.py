"""The child process of `lrtui demo`: the paper's tick MLP at a large LR, then the advisor's advice.

Run as ``python -m probes.demo_training RUN_DIR --steps N``. Plain SGD (batch 16) on the unit
sphere at η = 0.0285, just above this task's convergence threshold (see the sample sweep): the
sharpness reaches the stability threshold 2/η ≈ 70 within the first hundred steps and hovers
around and above it, and the loss settles into its chaotic equilibrium, so the advisor's
`drop_lr` and `start_averaging` appear in the first seconds. The last quarter of the steps follows that advice (the LR ×0.1, weights
averaged over the last third of the pre-training), and the loss falls again. About a minute on CPU.
"""

from __future__ import annotations

import argparse
import signal
import sys

import torch

from probes.tasks.training import train_ticks

#: A chaotic-equilibrium LR on our first reconstruction of the tick data (the demo's), and what
#: the advisor says to drop it to.
DEMO_LR = 0.0285
DEMO_FINETUNE_LR = DEMO_LR * 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.demo_training")
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=40_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:  # finish the step, close the run cleanly
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    steps = max(args.steps, 4)
    pretrain = steps * 3 // 4
    average_last = max(pretrain // 3, 1)
    train_ticks(args.run_dir, DEMO_LR, pretrain_steps=pretrain, finetune_steps=steps - pretrain,
                finetune_lr=DEMO_FINETUNE_LR, average_last=average_last,
                average_every=max(average_last // 20, 1), log_every=max(steps // 40, 1),
                sharpness_budget=0.25, geometry="ours", name="demo", extra={"demo": True},
                should_stop=lambda: stop["now"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
