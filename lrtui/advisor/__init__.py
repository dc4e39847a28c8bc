"""The science of the learning rate: stability threshold, divergence, regimes, and what to do (numpy only)."""

from __future__ import annotations

from lrtui.advisor.advisor import STEP_FIELDS_READ, Advisor
from lrtui.advisor.recommend import initial_lr_band
from lrtui.advisor.state import (
    ACTIONS,
    REGIMES,
    AdvisorState,
    Alert,
    Done,
    Recommendation,
    Segment,
    Withdrawn,
)
from lrtui.advisor.sweep import SweepResult, SweepRun, analyze_sweep, summarize_sweep
from lrtui.advisor.threshold import (
    EDGE_BAND,
    edge_state,
    max_stable_lr,
    stability_threshold,
)

__all__ = [
    "ACTIONS",
    "Advisor",
    "AdvisorState",
    "Alert",
    "Done",
    "EDGE_BAND",
    "REGIMES",
    "Recommendation",
    "Segment",
    "SweepResult",
    "STEP_FIELDS_READ",
    "SweepRun",
    "Withdrawn",
    "analyze_sweep",
    "edge_state",
    "initial_lr_band",
    "max_stable_lr",
    "stability_threshold",
    "summarize_sweep",
]
