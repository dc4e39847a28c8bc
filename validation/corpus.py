"""The runs of the validation corpus: which task, optimizer, schedule, LR and label noise each has.

Not the full grid: every factor (task, optimizer, schedule, clean/noisy labels, LR from too small
to too large) and every regime occurs on several tasks, and each of issue 18's seven reported
situations has runs of its own (``cases``). Two sweeps (directories of constant-LR runs of one
task) let the sweep analysis be scored too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: Issue 18's reported situations, by number.
CASES = {
    1: "scheduled LR (warm-up+cosine, OneCycle, step, exponential)",
    2: "slow steady decline, plain SGD at a small LR",
    3: "noisy labels: slow memorization",
    4: "chance: the paper's MLP above its 2->3 boundary (train_acc logged), a run that cannot learn",
    5: "LR sweep x3 apart (band must not hold a failed LR)",
    6: "null losses (probe.step() without a loss)",
    7: "a catapult that recovers",
}


@dataclass(frozen=True)
class RunSpec:
    """One run of the corpus.

    Attributes:
        path: run directory relative to the corpus root (``sweep-*/...`` for sweep members).
        task, optimizer, schedule: see ``validation.workloads`` and ``validation.schedules``.
        lr: the LR (the peak LR of a warm-up/OneCycle schedule); None for the catapult run,
            whose LR is ``lr_times_sharpness`` / λ_max at initialization.
        steps: optimizer steps; ``stride``: the probe's stride (thins the log, fixed).
        noisy_share: share of training labels replaced at random.
        accumulate, clip: gradient accumulation (micro-batches per step) and clipping.
        loss_every: pass the loss to ``probe.step`` only every this many steps, ``probe.step()``
            otherwise (0: always).
        cases: issue 18's situations this run stands for (``CASES``).
    """

    path: str
    task: str
    optimizer: str
    schedule: str
    lr: float | None
    steps: int
    stride: int
    noisy_share: float = 0.0
    accumulate: int = 1
    clip: float | None = None
    loss_every: int = 0
    lr_times_sharpness: float | None = None
    cases: tuple[int, ...] = ()
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "optimizer": self.optimizer, "schedule": self.schedule, "lr": self.lr,
                "steps": self.steps, "stride": self.stride, "noisy_share": self.noisy_share,
                "accumulate": self.accumulate, "clip": self.clip, "loss_every": self.loss_every,
                "lr_times_sharpness": self.lr_times_sharpness, "cases": list(self.cases), "seed": self.seed}

    def scaled(self, factor: float) -> RunSpec:
        """The same run ``factor`` times as long (at least 64 steps; stride scaled alike)."""
        steps = max(64, round(self.steps * factor))
        return replace(self, steps=steps, stride=max(1, round(self.stride * factor)))


def _lr_name(lr: float) -> str:
    return f"lr{lr:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _run(task: str, optimizer: str, schedule: str, lr: float, steps: int, stride: int, *, sweep: str | None = None,
         noisy: float = 0.0, cases: tuple[int, ...] = (), **more: Any) -> RunSpec:
    name = f"{task}-{optimizer}-{schedule}-{_lr_name(lr)}" + (f"-noisy{round(noisy * 100)}" if noisy else "")
    for key, value in more.items():
        if value:
            name += f"-{key.replace('_', '')}{value}"
    path = f"{sweep}/{_lr_name(lr)}" if sweep else f"runs/{name}"
    return RunSpec(path, task, optimizer, schedule, lr, steps, stride, noisy_share=noisy, cases=cases, **more)


def corpus() -> list[RunSpec]:
    """Every run of the corpus, longest first (so a pool of workers finishes together).

    Sized for a recording of ~10 CPU-minutes (2 workers): 40 runs of 600-8,000 optimizer steps,
    each logged at a fixed stride so that a run's log has 400-750 step events (the corpus stays
    a few MB). Every case of ``CASES`` has at least two runs, on different tasks or seeds.
    """
    mlp, cnn, lm, reg, ticks = (3000, 5), (2000, 4), (800, 2), (3000, 5), (6000, 8)
    runs = [
        # digits MLP: an SGD sweep x3 apart, from a slow steady decline to a failure
        *[_run("digits-mlp", "sgd", "constant", lr, *mlp, sweep="sweep-digits-mlp-sgd",
               cases=(5, 2) if lr <= 0.01 else (5, 4) if lr >= 3.0 else (5,))
          for lr in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)],
        _run("digits-mlp", "sgd", "constant", 0.003, *mlp, cases=(2,), seed=1),
        _run("digits-mlp", "momentum", "multistep", 0.1, *mlp, cases=(1,)),
        _run("digits-mlp", "momentum", "exponential", 0.1, *mlp, cases=(1,), seed=1),
        _run("digits-mlp", "adamw", "warmup_cosine", 1e-3, *mlp, cases=(1,)),
        _run("digits-mlp", "adamw", "warmup_cosine", 3e-3, *mlp, noisy=0.3, cases=(1, 3)),
        _run("digits-mlp", "adamw", "onecycle", 1e-2, *mlp, cases=(1,)),
        _run("digits-mlp", "sgd", "constant", 0.1, *mlp, noisy=0.4, cases=(3,)),
        _run("digits-mlp", "sgd", "constant", 0.1, *mlp, noisy=0.4, cases=(3,), seed=1),
        _run("digits-mlp", "momentum", "constant", 0.03, *mlp, loss_every=10, cases=(6,)),
        _run("digits-mlp", "adamw", "constant", 3.0, *mlp, cases=(4,)),
        # digits CNN with BatchNorm
        *[_run("digits-bncnn", "momentum", "constant", lr, *cnn) for lr in (0.01, 1.0)],
        _run("digits-bncnn", "momentum", "warmup_cosine", 0.1, *cnn, cases=(1,), seed=1),
        _run("digits-bncnn", "adamw", "onecycle", 1e-2, *cnn, cases=(1,), seed=1),
        _run("digits-bncnn", "sgd", "step", 0.1, *cnn, noisy=0.3, cases=(1, 3)),
        _run("digits-bncnn", "adamw", "exponential", 1e-2, *cnn, cases=(1,)),
        # character-level GRU LM on generated text (clipping and accumulation as users have them)
        _run("char-gru", "adamw", "onecycle", 1e-2, *lm, clip=1.0, accumulate=2, cases=(1,)),
        _run("char-gru", "adamw", "warmup_cosine", 3e-3, *lm, clip=1.0, accumulate=2, cases=(1,), seed=1),
        _run("char-gru", "momentum", "step", 1.0, *lm, clip=1.0, cases=(1,)),
        *[_run("char-gru", "adamw", "constant", lr, *lm) for lr in (1e-4, 0.1)],
        # regression (Friedman #1, unscaled targets)
        *[_run("regression", "sgd", "constant", lr, *reg, cases=(2,) if lr <= 1e-4 else ()) for lr in (1e-4, 1e-2)],
        _run("regression", "sgd", "constant", 1e-3, *reg, loss_every=3, cases=(6,), seed=1),
        _run("regression", "momentum", "multistep", 1e-3, *reg, cases=(1,), seed=1),
        _run("regression", "adamw", "onecycle", 1e-2, *reg, cases=(1,)),
        _run("regression", "adamw", "exponential", 1e-2, *reg, cases=(1,), seed=1),
        _run("regression", "sgd", "constant", 3e-3, *reg, noisy=0.3, cases=(3,)),
        # the paper's tick MLP on the unit sphere: a sweep through its three regimes, and schedules
        *[_run("ticks-mlp", "sgd", "constant", lr, *ticks, sweep="sweep-ticks-mlp-sgd",
               cases=(4, 5) if lr >= 0.1 else (5,)) for lr in (2e-3, 1e-2, 3e-2, 0.1, 0.3)],
        _run("ticks-mlp", "sgd", "constant", 0.3, *ticks, cases=(4,), seed=1),
        _run("ticks-mlp", "sgd", "warmup_cosine", 0.05, *ticks, cases=(1,)),
        _run("ticks-mlp", "sgd", "constant", 1e-2, *ticks, noisy=0.2, cases=(3,)),
        # full-batch GD a little above 2/λ0 (a catapult, two seeds), and far above it (a divergence)
        *[RunSpec(f"runs/catapult-mlp-gd-constant-3x{'-seed1' if seed else ''}", "catapult-mlp", "sgd",
                  "constant", None, 600, 1, lr_times_sharpness=3.0, cases=(7,), seed=seed) for seed in (0, 1)],
        RunSpec("runs/catapult-mlp-gd-constant-20x", "catapult-mlp", "sgd", "constant", None, 600, 1,
                lr_times_sharpness=20.0),
    ]
    return sorted(runs, key=lambda r: -_cost(r))


def _cost(spec: RunSpec) -> float:
    """Rough CPU cost, for the order of the work (the LM's steps are the dearest)."""
    per_step = {"char-gru": 12.0, "digits-bncnn": 3.0, "ticks-mlp": 0.5, "catapult-mlp": 2.0}.get(spec.task, 1.0)
    return spec.steps * per_step * spec.accumulate
