"""Recommendations: what to do about a regime or a divergence, with the reason and the numbers.

Each function is pure: the facts in, one ``Recommendation`` out. The advisor decides *when* (once
per phase and situation, on confirmed verdicts: the hysteresis that keeps advice from flapping)
and ``ledger.py`` what is still in force; this module decides *what*.
"""

from __future__ import annotations

import math

from lrtui.advisor.regime import STATIONARY_BAND
from lrtui.advisor.state import Recommendation

#: drop_lr without a known convergence threshold: the classic step decay (SASA+ drops x0.1).
DROP_FACTOR = 0.1
#: lower_lr after a divergence: halve (large-model logbooks roll back and lower the LR).
DIVERGED_FACTOR = 0.5
#: lower_lr when stuck at chance (regime 3): the LR is far too large; one half-decade down.
CHANCE_FACTOR = 0.3
#: raise_lr for the next run without a known threshold: double.
RAISE_FACTOR = 2.0
#: Roll back at least this many optimizer steps before the divergence began (PaLM, OPT: ~100).
ROLLBACK_STEPS = 100
#: Checkpoints to average when starting SWA/EMA.
AVERAGING_CHECKPOINTS = 20
#: The recommended initial-LR band is [T, BAND_FACTOR × T] for a convergence threshold T: the
#: paper's sub-regime 2A spans 7.5e-3 .. 1.78e-2 = 1 .. 2.4 T for its MLP.
BAND_FACTOR = 2.5


def initial_lr_band(convergence_threshold_lr: float) -> tuple[float, float]:
    """The initial-LR band slightly above the convergence threshold where the best models come from."""
    return convergence_threshold_lr, BAND_FACTOR * convergence_threshold_lr


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def drop_lr(step: int, lr: float, level: float, window: tuple[int, int], change: tuple[float, float],
            lr_change: float, convergence_threshold_lr: float | None) -> Recommendation:
    """Equilibrium reached at the LR in force: drop the LR x0.1, and at least to the convergence
    threshold when known (from far above it x0.1 is not enough; from just above it, the threshold
    alone is too little)."""
    new_lr, how = lr * DROP_FACTOR, f"x{DROP_FACTOR:g}"
    if convergence_threshold_lr is not None and 0 < convergence_threshold_lr < new_lr:
        new_lr, how = convergence_threshold_lr, "the convergence threshold from the sweep"
    elif convergence_threshold_lr is not None and convergence_threshold_lr > 0:
        how += f", below the sweep's convergence threshold {_fmt(convergence_threshold_lr)}"
    moving = f" at the LR in force (the LR moved {lr_change:+.0%} across the window)" if lr_change else ""
    reason = (f"loss is stationary at {_fmt(level)} over steps {window[0]}-{window[1]} (change "
              f"{change[0]:+.1%}..{change[1]:+.1%}, 90% CI: it falls by at most {STATIONARY_BAND:.0%}{moving}, "
              f"little against its fall so far): further steps at lr {_fmt(lr)} no longer lower it; drop the LR to {_fmt(new_lr)} ({how}) to fine-tune")
    return Recommendation("drop_lr", step, reason, {
        "new_lr": new_lr, "current_lr": lr, "loss_level": level, "window_start_step": window[0],
        "window_end_step": window[1], "change_lo": change[0], "change_hi": change[1], "lr_change": lr_change,
        "convergence_threshold_lr": convergence_threshold_lr,
    })


def start_averaging(step: int, segment_start_step: int, level: float) -> Recommendation:
    """Equilibrium reached: average weights from now on (SWA or EMA), over about as long again."""
    steps = max(step - segment_start_step, 1)
    every = max(steps // AVERAGING_CHECKPOINTS, 1)
    decay = 1.0 - 1.0 / steps
    reason = (f"loss reached its equilibrium level {_fmt(level)}: start weight averaging now with "
              f"torch.optim.swa_utils.AveragedModel (SWA: a checkpoint every {every} steps, "
              f"{AVERAGING_CHECKPOINTS} in all over ~{steps} steps; or EMA decay {decay:.6g}), "
              f"then update_bn before evaluating")
    return Recommendation("start_averaging", step, reason, {
        "start_step": step, "averaging_steps": steps, "checkpoints": AVERAGING_CHECKPOINTS,
        "checkpoint_every": every, "ema_decay": decay, "loss_level": level,
    })


def lower_lr_diverged(step: int, lr: float, began_step: int, reason_text: str) -> Recommendation:
    """Diverged: lower the LR."""
    new_lr = lr * DIVERGED_FACTOR
    reason = (f"{reason_text} from step {began_step} at lr {_fmt(lr)}: lower the LR to "
              f"{_fmt(new_lr)} (x{DIVERGED_FACTOR:g}) after rolling back")
    return Recommendation("lower_lr", step, reason, {"new_lr": new_lr, "current_lr": lr, "factor": DIVERGED_FACTOR,
                                                     "diverged_at_step": began_step})


def rollback_diverged(step: int, began_step: int, to_step: int) -> Recommendation:
    """Diverged: roll back to a checkpoint from before the instability began."""
    reason = (f"divergence began at step {began_step}: roll back to a checkpoint at or before step "
              f"{to_step} (at least {ROLLBACK_STEPS} steps earlier, and before the smoothed loss rose)")
    return Recommendation("rollback", step, reason, {"to_step": to_step, "diverged_at_step": began_step})


def lower_lr_chance(step: int, lr: float, level: float, initial: float,
                    convergence_threshold_lr: float | None) -> Recommendation:
    """Stuck at chance level (regime 3): the LR is far too large."""
    if convergence_threshold_lr is not None and convergence_threshold_lr > 0:
        lo, hi = initial_lr_band(convergence_threshold_lr)
        new_lr, how = math.sqrt(lo * hi), "the middle of the recommended band"
    else:
        new_lr, how = lr * CHANCE_FACTOR, f"x{CHANCE_FACTOR:g}"
    reason = (f"no learning at lr {_fmt(lr)}: loss stays at {_fmt(level)}, the initial level "
              f"{_fmt(initial)} (chance, regime 3); lower the LR to {_fmt(new_lr)} ({how})")
    return Recommendation("lower_lr", step, reason, {"new_lr": new_lr, "current_lr": lr, "loss_level": level,
                                                     "initial_loss": initial})


def rollback_chance(step: int, to_step: int) -> Recommendation:
    """Stuck at chance level: nothing since the segment began is worth keeping."""
    reason = (f"nothing was learned since step {to_step}, where this learning rate began: restart "
              f"from the checkpoint at step {to_step} with the lower LR")
    return Recommendation("rollback", step, reason, {"to_step": to_step})


def raise_lr(step: int, lr: float, level: float, convergence_threshold_lr: float | None) -> Recommendation:
    """The initial LR converged (regime 1): the best initial LR lies slightly above the threshold."""
    if convergence_threshold_lr is not None and convergence_threshold_lr > 0:
        lo, hi = initial_lr_band(convergence_threshold_lr)
        new_lr = math.sqrt(lo * hi) if lr < lo else lr * RAISE_FACTOR
    else:
        new_lr = lr * RAISE_FACTOR
    reason = (f"train loss reached {_fmt(level)} (< 1e-2) at lr {_fmt(lr)}: this initial LR is at or "
              f"below the convergence threshold (regime 1), which gives sharper, worse minima; the "
              f"best initial LR lies slightly above the threshold: try {_fmt(new_lr)} in the next run")
    return Recommendation("raise_lr", step, reason, {"new_lr": new_lr, "current_lr": lr, "loss_level": level,
                                                     "convergence_threshold_lr": convergence_threshold_lr})


__all__ = [
    "BAND_FACTOR",
    "drop_lr",
    "initial_lr_band",
    "lower_lr_chance",
    "lower_lr_diverged",
    "raise_lr",
    "rollback_chance",
    "rollback_diverged",
    "start_averaging",
]
