"""Benchmark of the control path's cost: step time with ``control=True`` / ``autopilot=True`` over the probe alone.

Run ``python benchmarks/control.py`` (``--quick`` for a short run). The task is the paper's
synthetic MLP on the tick data (batch 16, plain SGD, weights kept on the unit sphere: a step of
~0.2 ms, the probe's worst case), at stride 1 and at the sample sweep's stride 8. Each arm is one
long-lived training with its own probe (the autopilot's advisor sees the whole run, as it would):
``probe`` (no control), ``control`` (commands looked for, none come), ``autopilot`` (the advisor
in its thread, acting when it sees the equilibrium) and ``probe (twin)``, a second plain probe for
the A/A column. Blocks of steps of every arm alternate, their order rotating every repetition;
each block is timed with process CPU time (all threads: the autopilot's thread is charged to its
arm). The table gives the median over repetitions of each arm's block time over the ``probe``
block of the same repetition, and the ratio of the fastest blocks. Target: autopilot <= 1.02.
On a shared machine the A/A column shows how much of that is noise; the last column is immune to
it: the advisor thread's own CPU time (``time.thread_time``) over the CPU time of its arm's blocks,
and the seconds the training thread waited for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes import Probe  # noqa: E402
from probes.tasks.ticks import TickMLP, keep_on_unit_sphere, make_tick_data  # noqa: E402

ARMS = ("probe", "control", "autopilot", "probe (twin)")


class Arm:
    """One training with its own probe, stepped a block at a time."""

    def __init__(self, name: str, root: Path, stride: int, data, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = TickMLP(seed=seed)
        params = self.model.trained_parameters()
        self.optimizer = torch.optim.SGD(params, lr=0.00811)
        keep_on_unit_sphere(self.optimizer, params)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.data = data
        self.g = torch.Generator().manual_seed(seed + 1)
        extra = {"control": True} if name == "control" else {"autopilot": True} if name == "autopilot" else {}
        self.probe = Probe(self.model, self.optimizer, root / name.replace(" ", "-").strip("()"), stride=stride,
                           sharpness_budget=0.0, adaptive_stride=False, system_stats=False, scale_invariant=True,
                           **extra)

    def block(self, steps: int) -> float:
        x, y = self.data.x_train, self.data.y_train
        started = time.process_time()
        for _ in range(steps):
            idx = torch.randint(0, len(y), (16,), generator=self.g)
            loss = self.loss_fn(self.model(x[idx]), y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.probe.step(loss)
        return time.process_time() - started

    def close(self) -> None:
        self.probe.close()


def measure(stride: int, reps: int, steps: int) -> dict[str, tuple[float, float, float]]:
    """Per arm: (median ratio to ``probe``, ratio of the fastest blocks, ms per step of its fastest)."""
    data = make_tick_data(seed=0, geometry="authors")
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {a: Arm(a, Path(tmp), stride, data) for a in ARMS}
        for arm in arms.values():  # warm-up
            arm.block(steps // 4)
        for rep in range(reps):
            order = ARMS[rep % len(ARMS):] + ARMS[: rep % len(ARMS)]
            for name in order:
                times[name].append(arms[name].block(steps))
        acted = arms["autopilot"].probe.actions
        pilot = arms["autopilot"].probe.control.autopilot
        thread_share = pilot.cpu_seconds / sum(times["autopilot"])
        waited = pilot.waited_seconds
        for arm in arms.values():
            arm.close()
    base = times["probe"]
    out = {}
    for name in ARMS:
        ratios = [t / b for t, b in zip(times[name], base)]
        out[name] = (statistics.median(ratios), min(times[name]) / min(base), 1e3 * min(times[name]) / steps)
    out["_acted"] = tuple(a["step"] for a in acted)  # type: ignore[assignment]
    out["_thread"] = (thread_share, waited, 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter blocks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reps, steps = (6, 300) if args.quick else (15, 1000)
    print(f"{reps} repetitions of {steps} steps per arm; process CPU time; tick MLP, batch 16")
    print("| stride | arm | median ratio to probe | fastest-block ratio | ms/step (fastest) |")
    print("|---|---|---|---|---|")
    for stride in (1, 8):
        result = measure(stride, reps, steps)
        acted = result.pop("_acted")
        share, waited, _ = result.pop("_thread")
        for name in ARMS:
            med, fast, ms = result[name]
            print(f"| {stride} | {name} | {med:.3f} | {fast:.3f} | {ms:.3f} |")
        print(f"| {stride} | (autopilot acted at steps {', '.join(map(str, acted)) or 'none'}; its advisor thread: "
              f"{100 * share:.2f}% of the arm's CPU time, training waited {waited:.3f} s) | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
