"""What the framework-integration tests share: the optional frameworks, a run's events, norms by hand."""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pytest
import torch


def require(name: str) -> ModuleType:
    """Import an optional framework: skip the module's tests without it, except in CI.

    ``scripts/test.sh`` installs the extras, so under CI (``CI`` set) a missing framework is an
    import error, never a silent skip.
    """
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install -e '.[lightning,transformers]')")


def events(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The run's events, in the order written (of one kind, if given)."""
    lines = (Path(run_dir) / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if kind is None or e["kind"] == kind]


def norm(tensors: Iterable[torch.Tensor | None]) -> float:
    """The Euclidean norm of all of them together, in float64 (None counts as zero)."""
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors if t is not None))


def flat(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """The parameters as one float64 vector (a copy)."""
    return torch.cat([p.detach().double().reshape(-1) for p in params])
