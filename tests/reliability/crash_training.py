"""Kill -9 real training runs (probe attached) at random moments; prints what each child had reported.

Run as ``python crash_training.py WORKDIR TRIALS SEED``. torch is imported once; each trial is a
forked child that trains until it is killed with SIGKILL after a random delay (drawn from SEED),
then reaped. While training, the child appends to ``progress`` (small O_APPEND writes, which a kill
cannot tear): ``loss STEP VALUE`` before handing step STEP to the probe, and ``flushed STEP`` once
the run writer confirmed that everything up to STEP is in the file. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)


def train_until_killed(trial_dir: Path, steps: int | None = None) -> None:
    """Train (forever by default) with the probe, reporting progress as the module says."""
    from probes import Probe

    progress = os.open(trial_dir / "progress", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = torch.randn(256, 8), torch.randn(256, 1)
    probe = Probe(model, optimizer, trial_dir / "run", loss_fn=torch.nn.functional.mse_loss,
                  hessian_batch=(inputs[:64], targets[:64]), sharpness_budget=0.2, flush_every=1, adaptive_stride=False)
    os.write(progress, b"ready\n")
    step = 0
    while steps is None or step < steps:
        batch = torch.randint(0, 256, (32,))
        loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        os.write(progress, f"loss {step} {loss.item()!r}\n".encode())
        probe.step(loss)
        if step % 10 == 9 and probe.writer.flush():
            os.write(progress, f"flushed {step}\n".encode())
        step += 1
    probe.close()
    os.close(progress)


def main() -> None:
    import probes  # noqa: F401  (imported once, before forking)

    workdir, trials, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    warm = workdir / "warm-up"
    warm.mkdir(parents=True)
    train_until_killed(warm, steps=30)  # first-use costs of torch paid once, not in every child
    out = []
    for trial in range(trials):
        trial_dir = workdir / f"trial-{trial:03d}"
        trial_dir.mkdir(parents=True)
        # Mostly mid-training, sometimes while the probe is still starting up.
        delay = rng.uniform(0.0, 0.3) if rng.random() < 0.2 else rng.uniform(0.3, 2.0)
        pid = os.fork()
        if pid == 0:
            try:
                train_until_killed(trial_dir)
            finally:
                os._exit(1)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        out.append({"dir": str(trial_dir), "pid": pid, "delay": delay,
                    "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
