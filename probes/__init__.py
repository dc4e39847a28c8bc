"""The probe that runs inside a PyTorch training job and writes its run directory."""

from __future__ import annotations

from probes.probe import Probe

__all__ = ["Probe"]
