"""The run's step columns as the rules read them: what counts as a loss, a non-finite value, a skipped step.

One home for the cleaning, whichever way the steps come (one event at a time or a whole run's
columns): both are turned into columns and taken by ``StepSeries.extend``.

- A *missing* value (``null``, an absent field, anything that is not a number) is no value: it is
  never a divergence and is left out of every loss statistic.
- A *non-finite* value (NaN, ±Infinity) of the loss is a divergence; of the gradient norm too,
  except on a step the GradScaler skipped (``"skipped": true``: AMP skips exactly the steps whose
  gradients are not finite, and nothing was applied).
- A skipped step's loss is left out of the loss series (nothing was learned on it).
- The loss series the rules read is the *usable* losses only (finite, not skipped), each with
  the index of its logged step; finite losses are clipped to ±``LOSS_CAP`` so sums stay finite.
"""

from __future__ import annotations

import numpy as np

#: Finite losses are clipped to ±this before any sum: a loss of 1e300 is a divergence all the same.
LOSS_CAP = 1e100
#: Smallest positive loss whose log is taken as it is (a loss of exactly 0 is floored to it).
LOG_FLOOR = 1e-300


class Column:
    """A growable 1-D numpy array (amortized O(1) append of a block)."""

    __slots__ = ("_buf", "n")

    def __init__(self, dtype: type = np.float64) -> None:
        self._buf: np.ndarray = np.zeros(64, dtype=dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        k = len(values)
        if self.n + k > len(self._buf):
            grown = np.zeros(max(2 * len(self._buf), self.n + k), dtype=self._buf.dtype)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n:self.n + k] = values
        self.n += k

    @property
    def a(self) -> np.ndarray:
        """The values so far (a view: do not keep it across an ``extend``)."""
        return self._buf[: self.n]

    def __len__(self) -> int:
        return self.n

    def last(self, default: float = 0.0) -> float:
        return float(self._buf[self.n - 1]) if self.n else default


class StepSeries:
    """Every logged step (index i), and the usable losses and gradient norms with prefix sums.

    Attributes:
        step, lr: per logged step: the optimizer step and the LR of param group 0 (NaN: none).
        bad: per logged step: None, ``"non-finite loss"`` or ``"non-finite gradient norm"``
            (only the first such step matters; ``first_bad`` is its index).
        loss_at, loss: the usable losses and the index of their logged step.
        cum_loss, cum_log, cum_log2, cum_nonpos: prefix sums over the usable losses (length + 1):
            of the loss, of log(loss) (non-positive losses count 0 there), of log(loss)², and the
            count of non-positive losses (the regime test then uses arithmetic means).
        grad_at, cum_log_grad: the usable (finite, positive) gradient norms' logged indices and the
            prefix sums of their logs.
        lr_time: per logged step: the LR-time τ so far, the sum of LR × optimizer steps (each
            logged step's LR counts for the steps since the previous logged one; a missing LR
            counts as the last one seen, 1 before any): gradient-flow time, in which progress
            at one LR compares with progress at another (``regime.py``).
    """

    def __init__(self) -> None:
        self.step = Column(np.int64)
        self.lr = Column()
        self.loss_at = Column(np.int64)
        self.loss = Column()
        self.cum_loss = Column()
        self.cum_log = Column()
        self.cum_log2 = Column()
        self.cum_nonpos = Column(np.int64)
        self.grad_at = Column(np.int64)
        self.cum_log_grad = Column()
        self.lr_time = Column()
        self._lr_held = 1.0
        for c in (self.cum_loss, self.cum_log, self.cum_log2, self.cum_nonpos, self.cum_log_grad):
            c.extend(np.zeros(1, dtype=c.a.dtype))
        self.first_bad: int | None = None
        self.first_bad_reason = ""
        self.first_loss: float | None = None  # the first usable loss: the untrained model's
        self.last_lrs: list[float] = []

    def __len__(self) -> int:
        return len(self.step)

    def extend(self, steps: np.ndarray, loss: np.ndarray, loss_missing: np.ndarray, grad: np.ndarray,
               grad_missing: np.ndarray, lr: np.ndarray, skipped: np.ndarray) -> None:
        """Append a block of logged steps (all arrays of one length; float64 except the bool masks)."""
        n0 = len(self.step)
        k = len(steps)
        if not k:
            return
        prev_step = self.step.last(float(steps[0]))
        self.step.extend(steps)
        self.lr.extend(lr)
        self._extend_lr_time(steps, lr, prev_step)
        loss_nonfinite = ~loss_missing & ~np.isfinite(loss)
        grad_nonfinite = ~grad_missing & ~np.isfinite(grad) & ~skipped
        if self.first_bad is None and (loss_nonfinite.any() or grad_nonfinite.any()):
            f = int(np.argmax(loss_nonfinite | grad_nonfinite))
            self.first_bad = n0 + f
            self.first_bad_reason = "non-finite loss" if loss_nonfinite[f] else "non-finite gradient norm"
        usable = ~loss_missing & np.isfinite(loss) & ~skipped
        idx = np.flatnonzero(usable)
        if len(idx):
            values = np.clip(loss[idx], -LOSS_CAP, LOSS_CAP)
            if self.first_loss is None:
                self.first_loss = float(values[0])
            positive = values > 0
            logs = np.where(positive, np.log(np.maximum(values, LOG_FLOOR)), 0.0)
            self.loss_at.extend(idx + n0)
            self.loss.extend(values)
            _extend_cumsum(self.cum_loss, values)
            _extend_cumsum(self.cum_log, logs)
            _extend_cumsum(self.cum_log2, logs * logs)
            _extend_cumsum(self.cum_nonpos, (~positive).astype(np.int64))
        gidx = np.flatnonzero(~grad_missing & np.isfinite(grad) & (grad > 0))
        if len(gidx):
            self.grad_at.extend(gidx + n0)
            _extend_cumsum(self.cum_log_grad, np.log(grad[gidx]))

    def _extend_lr_time(self, steps: np.ndarray, lr: np.ndarray, prev_step: float) -> None:
        known = np.isfinite(lr) & (lr > 0)
        held = np.where(known, lr, np.nan)
        if not known[0]:
            held[0] = self._lr_held
        idx = np.where(np.isfinite(held), np.arange(len(held)), 0)
        held = held[np.maximum.accumulate(idx)]  # forward-fill the missing LRs
        self._lr_held = float(held[-1])
        gaps = np.diff(np.concatenate([[prev_step], steps.astype(np.float64)]))
        with np.errstate(over="ignore", invalid="ignore"):  # absurd LRs or steps: inf, not a warning
            out = np.cumsum(np.concatenate([[self.lr_time.last(0.0)], held * np.maximum(gaps, 0.0)]))
        self.lr_time.extend(out[1:])  # sequential sums: bitwise the same whatever the blocks

    def usable_before(self, i: int) -> int:
        """How many usable losses come from logged steps before index i."""
        return int(np.searchsorted(self.loss_at.a, i, side="left"))


def _extend_cumsum(prefix: Column, values: np.ndarray) -> None:
    """Continue a prefix-sum column: sequential sums, bitwise the same whatever the blocks."""
    out = np.cumsum(np.concatenate([prefix.a[-1:], values]))
    prefix.extend(out[1:])


__all__ = ["LOSS_CAP", "StepSeries", "Column"]
