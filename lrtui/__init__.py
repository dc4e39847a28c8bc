"""lrtui: a terminal monitor and learning-rate advisor for live PyTorch training."""

from __future__ import annotations

__version__ = "0.1.0"
