"""Under torch.distributed: rank 0 decides what to apply, every rank applies it at the same step.

Every ``SYNC_EVERY``-th optimizer step (a schedule every rank knows, so no rank ever waits in a
collective the others skip) each rank's pre-step hook takes part in one broadcast of a small
float64 tensor from rank 0: what to apply now (at most ``MAX_ORDERS`` actions), or that control
is off from now on. It runs on a gloo group (the default group when it is gloo, else one made
for it), so a CUDA job pays no device synchronization for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: Optimizer steps between two broadcasts.
SYNC_EVERY = 8
#: Actions one broadcast can carry (more wait for the next).
MAX_ORDERS = 4
ACTION_CODES = {"set_lr": 1.0, "drop_lr": 2.0, "start_averaging": 3.0}
MODE_CODES = {"swa": 0.0, "ema": 1.0}
_HEAD = 2  # [disable, number of orders]
_FIXED = 5  # [action, mode, checkpoint_every, ema_decay, stop_averaging]


@dataclass
class Order:
    """What every rank does at one step: an LR change (``factors`` per group, ``new_lrs`` the
    exact values of an absolute change) or the start of averaging."""

    action: str
    factors: list[float] | None = None
    new_lrs: list[float | None] | None = None
    mode: str = "swa"
    checkpoint_every: int = 1
    ema_decay: float = 0.0
    stop_averaging: bool = False  # an LR change that ends the averaging (the autopilot's drop)


class ControlSync:
    """The broadcast of each sync step. Made on every rank; the group is made at the first
    broadcast (a collective call every rank reaches at the same step)."""

    def __init__(self, n_groups: int) -> None:
        self.n_groups = n_groups
        self._group: object | None = None
        self._ready = False

    def _setup(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("torch.distributed is not initialized at the first optimizer step")
        if dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")
        self._ready = True

    def exchange(self, rank: int, orders: list[Order], disable: bool) -> tuple[list[Order], bool]:
        """Rank 0's ``orders`` and ``disable`` on every rank (the others' arguments are ignored)."""
        if not self._ready:
            self._setup()
        n = self.n_groups
        block = _FIXED + 2 * n
        t = torch.zeros(_HEAD + MAX_ORDERS * block, dtype=torch.float64)
        if rank == 0:
            t[0] = 1.0 if disable else 0.0
            t[1] = len(orders)
            for k, order in enumerate(orders[:MAX_ORDERS]):
                at = _HEAD + k * block
                t[at] = ACTION_CODES[order.action]
                t[at + 1] = MODE_CODES.get(order.mode, 0.0)
                t[at + 2] = order.checkpoint_every
                t[at + 3] = order.ema_decay
                t[at + 4] = 1.0 if order.stop_averaging else 0.0
                f = order.factors or [math.nan] * n
                e = order.new_lrs or [None] * n
                t[at + _FIXED: at + _FIXED + n] = torch.tensor([math.nan if v is None else v for v in f], dtype=torch.float64)
                t[at + _FIXED + n: at + block] = torch.tensor([math.nan if v is None else v for v in e], dtype=torch.float64)
        dist.broadcast(t, src=0, group=self._group)
        values = t.tolist()
        if values[0]:
            return [], True
        actions = {v: k for k, v in ACTION_CODES.items()}
        modes = {v: k for k, v in MODE_CODES.items()}
        out = []
        for k in range(int(values[1])):
            at = _HEAD + k * block
            action = actions[values[at]]
            factors = values[at + _FIXED: at + _FIXED + n]
            exact = values[at + _FIXED + n: at + block]
            lr_change = action != "start_averaging"
            out.append(Order(
                action,
                factors=factors if lr_change else None,
                new_lrs=[None if math.isnan(v) else v for v in exact] if lr_change else None,
                mode=modes.get(values[at + 1], "swa"),
                checkpoint_every=int(values[at + 2]),
                ema_decay=values[at + 3],
                stop_averaging=bool(values[at + 4]),
            ))
        return out, False
