"""Chance from a logged accuracy: any user metric whose name contains ``acc`` (case-insensitive).

Regime 3 (random walk) is accuracy at the chance level, whatever the loss does. The chance level
is ``meta.json``'s ``extra.chance_accuracy`` when the user declared it (or ``1 / num_classes``),
else the lower of the first logged value and 1/2 (a balanced binary task's chance; the first
evaluation of an untrained classifier is at or near its chance level, and a first evaluation
made after some learning does not lift the reference above 1/2). Accuracies above 1 are read as
percentages.

A metric (one name) is *at chance* over a stretch of steps when it was evaluated at least
``MIN_EVALUATIONS`` times there and every evaluation of the last quarter (at least the last
``MIN_EVALUATIONS``) stayed below ``ABOVE × chance``: 0.6 on a balanced binary task, the rule the
sample recorder labels random walks with (on 512 points 4.5 binomial standard deviations above
0.5, so a classifier that ignores the labels does not reach it by sampling noise). The run is at chance when every accuracy metric evaluated enough there
is at chance; above chance when one is not; unknown when none was evaluated enough.
"""

from __future__ import annotations

import bisect
from typing import Any

from lrtui.runlog.numbers import finite_float

#: Fewest evaluations of an accuracy in a stretch before it says anything about chance.
MIN_EVALUATIONS = 2
#: An accuracy below this multiple of the chance level is at chance.
ABOVE = 1.2
#: Metric phases that evaluate an averaged copy of the model (SWA/EMA), not the trained weights.
AVERAGED_PHASES = ("swa", "ema", "averaged")


def is_accuracy(name: str) -> bool:
    """Whether a metric name is an accuracy (the documented rule: it contains ``acc``)."""
    return "acc" in name.lower()


class AccuracyLog:
    """The accuracy evaluations of a run, by metric name, in step order."""

    def __init__(self, meta: dict[str, Any]) -> None:
        raw = meta.get("extra")
        extra: dict[str, Any] = raw if isinstance(raw, dict) else {}
        declared = finite_float(extra.get("chance_accuracy"))
        classes = finite_float(extra.get("num_classes"))
        if declared is None and classes is not None and classes >= 2:
            declared = 1.0 / classes
        self.declared = declared
        self.evaluations: dict[str, tuple[list[int], list[float]]] = {}

    def add(self, event: dict[str, Any], step: int) -> None:
        """Take the accuracies of one ``metric`` event (of the trained model, not an average)."""
        if event.get("phase") in AVERAGED_PHASES:
            return
        for name, value in event.items():
            if name in ("kind", "step", "time") or not isinstance(name, str) or not is_accuracy(name):
                continue
            v = finite_float(value)
            if v is None:
                continue
            steps, values = self.evaluations.setdefault(name, ([], []))
            k = bisect.bisect_right(steps, step)
            steps.insert(k, step)
            values.insert(k, v)

    def at_chance(self, first_step: int, last_step: int) -> bool | None:
        """True when the run's accuracy is at chance over [first_step, last_step], False when it
        is above, None when no accuracy was evaluated enough there."""
        verdicts = []
        for steps, values in self.evaluations.values():
            a, b = bisect.bisect_left(steps, first_step), bisect.bisect_right(steps, last_step)
            if b - a < MIN_EVALUATIONS:
                continue
            scale = 100.0 if max(values) > 1.0 else 1.0
            chance = self.declared * scale if self.declared is not None else min(values[0], 0.5 * scale)
            bar = min(ABOVE * chance, scale)
            tail = values[b - max(MIN_EVALUATIONS, (b - a) // 4):b]
            verdicts.append(max(tail) < bar)
        if not verdicts:
            return None
        return all(verdicts)


__all__ = ["AVERAGED_PHASES", "AccuracyLog", "is_accuracy"]
