"""Which param groups are scale-invariant: the model's output does not change when their weights are scaled."""

from __future__ import annotations

from typing import Callable

import torch

#: Relative change of the outputs below which doubling a group counts as "no change". A group
#: feeding LayerNorm/BatchNorm moves the outputs by ~eps/variance (1e-4..1e-3); any other group
#: moves them by O(1) (a homogeneous layer doubles them).
RELATIVE_CHANGE = 1e-2


def detect_scale_invariance(evaluate: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> list[bool]:
    """One flag per param group: doubling all of the group's weights leaves ``evaluate()`` unchanged.

    ``evaluate`` should return the model's outputs on a fixed batch (or the loss) and be
    deterministic (call it under :func:`probes.run_state.untouched_run`, which fixes dropout).
    The weights are restored bitwise from a copy.
    """
    flags = []
    with torch.no_grad():
        base = evaluate().detach().to(torch.float64)
        base_norm = base.norm()
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params or not torch.isfinite(base_norm) or base_norm == 0:
                flags.append(False)
                continue
            saved = [p.detach().clone() for p in params]
            try:
                for p in params:
                    p.mul_(2.0)
                scaled = evaluate().detach().to(torch.float64)
            finally:
                for p, s in zip(params, saved):
                    p.copy_(s)
            change = (scaled - base).norm()
            flags.append(bool(torch.isfinite(change) and change <= RELATIVE_CHANGE * base_norm))
    return flags
