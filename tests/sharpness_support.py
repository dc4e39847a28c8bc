"""Helpers for the sharpness tests: a deadline counted in products, not in seconds."""

from __future__ import annotations


class CutAfter:
    """``out_of_time`` that says yes after ``n`` questions: a deadline counted in products."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.n
