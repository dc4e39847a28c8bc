"""The ``meta.json`` fields the probe knows: host, process, model size and the optimizer's settings."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from typing import Any, Sequence

import torch

from probes.step_metrics import trained_parameters


def _json_value(value: Any) -> Any:
    """A hyperparameter as plain JSON, or ``...`` when it has none (callables, big tensors)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_json_value(v) for v in value]
        return ... if any(v is ... for v in items) else items
    return ...


def describe_optimizer(optimizer: torch.optim.Optimizer, scale_invariant: Sequence[bool]) -> dict[str, Any]:
    """``{"class": ..., "param_groups": [...]}`` as docs/run-format.md specifies."""
    groups = []
    for gi, group in enumerate(optimizer.param_groups):
        entry: dict[str, Any] = {}
        for key, value in group.items():
            if key == "params":
                continue
            converted = _json_value(value)
            if converted is not ...:
                entry[key] = converted
        entry["params"] = sum(p.numel() for p in group["params"])
        entry["scale_invariant"] = bool(scale_invariant[gi]) if gi < len(scale_invariant) else False
        groups.append(entry)
    return {"class": type(optimizer).__name__, "param_groups": groups}


def run_meta(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    name: str,
    world_size: int,
    scale_invariant: Sequence[bool],
    probe_settings: dict[str, Any],
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every ``meta.json`` field the probe writes."""
    params, _ = trained_parameters(optimizer)
    first = next(iter(model.parameters()), None)
    return {
        "run_id": uuid.uuid4().hex,
        "name": name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "torch_version": str(torch.__version__),
        "device": str(first.device) if first is not None else "cpu",
        "world_size": world_size,
        "rank": 0,
        "param_count": sum(p.numel() for p in params if p.requires_grad),
        "optimizer": describe_optimizer(optimizer, scale_invariant),
        "probe": probe_settings,
        "extra": dict(extra or {}),
    }
