"""Small training tasks for the sample runs and the demo: the paper's tick MLP and a digits CNN."""

from __future__ import annotations

from probes.tasks.digits import DigitsCNN, DigitsData, make_digits_data
from probes.tasks.evaluation import evaluate
from probes.tasks.ticks import (
    LAST_LAYER_NORM,
    MARGIN,
    N_FEATURES,
    N_TEST,
    N_TRAIN,
    PlainTickMLP,
    TickData,
    TickMLP,
    feature_reliability,
    keep_on_unit_sphere,
    make_tick_data,
    rescale_to_unit_norm,
    sample_ticks,
    tick,
)

__all__ = [
    "DigitsCNN",
    "DigitsData",
    "LAST_LAYER_NORM",
    "MARGIN",
    "N_FEATURES",
    "N_TEST",
    "N_TRAIN",
    "PlainTickMLP",
    "TickData",
    "TickMLP",
    "evaluate",
    "feature_reliability",
    "keep_on_unit_sphere",
    "make_digits_data",
    "make_tick_data",
    "rescale_to_unit_norm",
    "sample_ticks",
    "tick",
]
