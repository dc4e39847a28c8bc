"""The recommendations of a run: those in force, those withdrawn (and why), those the run followed.

A recommendation stays in force until later evidence contradicts it (then it is *withdrawn*,
with the step and the reason) or the run follows it (then it is *done*, with the step): an LR
lowered after ``drop_lr`` or ``lower_lr``, an applied ``start_averaging`` action. A new phase
withdraws the advice of the phases before it that it did not follow (the LR in force changed,
so that advice was about another LR), except ``raise_lr``, which is about the next run.
"""

from __future__ import annotations

from lrtui.advisor.state import Done, Recommendation, Withdrawn

#: Advice about the next run: a later phase of this run does not touch it.
NEXT_RUN = ("raise_lr",)
#: Advice that a lower LR follows.
LOWER_LR = ("drop_lr", "lower_lr")


class Ledger:
    """Recommendations in force, withdrawn and done, each in the order it happened."""

    def __init__(self) -> None:
        self.in_force: list[tuple[int, Recommendation]] = []  # (phase index, recommendation)
        self.withdrawn: list[Withdrawn] = []
        self.done: list[Done] = []

    def add(self, phase: int, rec: Recommendation) -> None:
        self.in_force.append((phase, rec))

    def has(self, phase: int, action: str, *, withdrawn: bool = True) -> bool:
        """Whether ``action`` was recommended in phase ``phase``: in force, followed, or (unless
        ``withdrawn`` is False) withdrawn."""
        return any(p == phase and r.action == action for p, r in self.in_force) or any(
            d.phase == phase and d.recommendation.action == action for d in self.done) or (withdrawn and any(
                w.phase == phase and w.recommendation.action == action for w in self.withdrawn))

    def withdraw(self, actions: tuple[str, ...], step: int | None, why: str, phase: int | None = None) -> None:
        """Withdraw the recommendations in force with one of ``actions`` (of one phase, or all)."""
        keep = []
        for p, r in self.in_force:
            if r.action in actions and (phase is None or p == phase):
                self.withdrawn.append(Withdrawn(r, step, why, p))
            else:
                keep.append((p, r))
        self.in_force = keep

    def follow(self, actions: tuple[str, ...], step: int | None, how: str) -> None:
        """Mark the recommendations in force with one of ``actions`` as done by the run."""
        keep = []
        for p, r in self.in_force:
            if r.action in actions:
                self.done.append(Done(r, step, how, p))
            else:
                keep.append((p, r))
        self.in_force = keep

    def new_phase(self, step: int, lr: float, previous_lr: float | None) -> None:
        """A phase began at ``step`` with ``lr``: lowering the LR did what drop_lr/lower_lr asked;
        the rest of the earlier phases' advice (not about the next run) is withdrawn."""
        if previous_lr is not None and lr == lr and lr < previous_lr:
            self.follow(LOWER_LR, step, f"the LR was lowered to {lr:.3g} at step {step}")
        kept = tuple({r.action for _, r in self.in_force} - set(NEXT_RUN))
        self.withdraw(kept, step, f"the LR changed to {lr:.3g} at step {step}: advice for it follows from its own "
                                  "evidence")

    def recommendations(self) -> list[Recommendation]:
        return [r for _, r in self.in_force]


__all__ = ["Ledger"]
