"""Which process writes the run under torch.distributed, and the plain module inside a wrapper."""

from __future__ import annotations

import os

import torch


def rank_and_world_size() -> tuple[int, int]:
    """The global rank and world size; (0, 1) outside torch.distributed.

    Falls back to the ``RANK``/``WORLD_SIZE`` variables torchrun sets, so a probe created
    before ``init_process_group`` still knows it is not rank 0.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def unwrap_module(model: torch.nn.Module) -> torch.nn.Module:
    """The module a wrapper (DDP, DataParallel, torch.compile) holds, so calling it runs no collective."""
    seen = 0
    while seen < 8:  # wrappers can nest (compile of DDP); a cycle is impossible but cheap to bound
        seen += 1
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            break
    return model
