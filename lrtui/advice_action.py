"""Which command follows the advice in force, and what it would do to each param group's LR.

The app's apply key asks this module (the protocol itself is ``lrtui.control``): a pure function
of the advisor's state, so the screen only shows what it says and sends the command it builds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from lrtui.advisor import AdvisorState, Recommendation
from lrtui.control import (
    FACTOR_MAX,
    FACTOR_MIN,
    Averaging,
    Command,
    averaging_for,
    describe_lrs,
    new_command_id,
    recommendation_in_force,
)

#: Recommendations a running job can follow by a command, and the command that does it. A
#: ``lower_lr`` after a divergence is not one: it is advice for after a rollback (the weights
#: the run holds now are the diverged ones); ``raise_lr`` and ``rollback`` are for the next run.
COMMAND_FOR = {"drop_lr": "drop_lr", "start_averaging": "start_averaging", "lower_lr": "set_lr"}
#: At most this many groups' LRs are listed one by one; more are summarized.
LISTED_GROUPS = 4


@dataclass(frozen=True)
class Proposal:
    """One command that follows a recommendation in force, with what it changes.

    Attributes:
        action: the command's action (``drop_lr``, ``set_lr`` or ``start_averaging``).
        recommendation: the advisor's recommendation it follows.
        lr_before: every param group's LR now.
        lr_after: every group's LR once applied (the same for ``start_averaging``).
        lr: ``drop_lr``: group 0's new LR (the run moves the others by the same factor).
        factor: ``set_lr``: every group's LR times this.
        averaging: ``start_averaging``: the advisor's sizing.
    """

    action: str
    recommendation: Recommendation
    lr_before: tuple[float, ...]
    lr_after: tuple[float, ...]
    lr: float | None = None
    factor: float | None = None
    averaging: Averaging | None = None

    def command(self, run_id: str, source: str, by: str) -> Command:
        """The command file's content (a fresh id each time)."""
        return Command(new_command_id(), run_id, self.action, source, lr=self.lr, factor=self.factor,
                       recommendation_step=self.recommendation.step, averaging=self.averaging,
                       created_at=time.time(), by=by)

    def what(self) -> str:
        """``drop_lr: lr 0.1 -> 0.01`` (every group, compactly), or the averaging asked for."""
        if self.action == "start_averaging" and self.averaging is not None:
            return (f"start_averaging: SWA (a checkpoint every {self.averaging.checkpoint_every} steps, or EMA "
                    f"decay {self.averaging.ema_decay:.6g} if the run averages by EMA); "
                    f"lr stays {describe_group_lrs(self.lr_before)}")
        return f"{self.action}: lr {describe_change(self.lr_before, self.lr_after)}"


def describe_group_lrs(lrs: tuple[float, ...] | list[float]) -> str:
    """Every group's LR, compactly: ``0.1``, ``0.1, 0.01``, or ``12 groups 1e-05..0.1``."""
    values = list(lrs)
    if values and all(v == values[0] for v in values):
        return describe_lrs(values[:1]) + (f" (all {len(values)} groups)" if len(values) > 1 else "")
    if len(values) <= LISTED_GROUPS:
        return describe_lrs(values)
    return f"{len(values)} groups {min(values):.3g}..{max(values):.3g}"


def describe_change(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """``0.1 -> 0.01``; with several groups each one's, or their range and the common factor."""
    if len(before) > LISTED_GROUPS and before[0] > 0:
        factors = {round(a / b, 12) for a, b in zip(after, before) if b > 0}
        if len(factors) == 1:
            return f"x{factors.pop():.3g} in all {len(before)} groups: {describe_group_lrs(before)} -> " \
                   f"{describe_group_lrs(after)}"
    return f"{describe_group_lrs(before)} -> {describe_group_lrs(after)}"


def _lrs(state: AdvisorState) -> tuple[float, ...] | None:
    lrs = [float(v) for v in state.lrs if isinstance(v, (int, float))] if state.lrs else []
    if not lrs and isinstance(state.lr, (int, float)):
        lrs = [float(state.lr)]
    if not lrs or not all(math.isfinite(v) and v > 0 for v in lrs):
        return None
    return tuple(lrs)


def propose(state: AdvisorState) -> tuple[list[Proposal], str]:
    """The commands that follow the recommendations in force (the advisor's order), and, when
    there is none, one line saying why."""
    lrs = _lrs(state)
    if lrs is None:
        return [], "the advisor knows no positive LR of the run yet"
    proposals, skipped = [], []
    for rec in state.recommendations:
        action = COMMAND_FOR.get(rec.action)
        if action is None or recommendation_in_force(state, rec.action) is not rec:
            skipped.append(rec.action)
            continue
        if action == "start_averaging":
            averaging, _ = averaging_for(state)
            proposals.append(Proposal(action, rec, lrs, lrs, averaging=averaging))
            continue
        if rec.action == "lower_lr" and (state.diverged_at_step is not None or "diverged_at_step" in rec.numbers):
            skipped.append("lower_lr after a divergence (roll back first)")
            continue
        new_lr = rec.numbers.get("new_lr") if isinstance(rec.numbers, dict) else None
        if not (isinstance(new_lr, (int, float)) and math.isfinite(new_lr) and new_lr > 0):
            skipped.append(f"{rec.action} without a new LR")
            continue
        factor = float(new_lr) / lrs[0]
        if not FACTOR_MIN <= factor <= FACTOR_MAX:
            skipped.append(f"{rec.action} by x{factor:.3g} (outside [{FACTOR_MIN:g}, {FACTOR_MAX:g}])")
            continue
        after = tuple(v * factor for v in lrs)
        if action == "drop_lr":
            proposals.append(Proposal(action, rec, lrs, after, lr=float(new_lr)))
        else:
            proposals.append(Proposal(action, rec, lrs, after, factor=factor))
    if proposals:
        return proposals, ""
    if not state.recommendations:
        return [], "no recommendation in force"
    return [], f"no recommendation in force that a command can follow ({', '.join(skipped)})"


__all__ = ["COMMAND_FOR", "LISTED_GROUPS", "Proposal", "describe_change", "describe_group_lrs", "propose"]
