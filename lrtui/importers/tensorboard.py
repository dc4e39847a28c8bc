"""Scalars from TensorBoard event files, read by TensorBoard's own reader (``lrtui[tensorboard]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lrtui.errors import UserError
from lrtui.importers.run import Point, Series

INSTALL_HINT = "pip install 'lrtui[tensorboard]'"
#: How TensorBoard names its event files.
EVENT_FILE_MARK = "tfevents"


def _accumulator_class() -> Any:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise UserError(f"reading TensorBoard logs needs the tensorboard package: {INSTALL_HINT}") from None
    return EventAccumulator


def event_dirs(logdir: Path) -> list[Path]:
    """The directories under ``logdir`` (itself included) that hold event files, sorted; a single
    event file given as ``logdir`` is its own entry."""
    if logdir.is_file():
        return [logdir] if EVENT_FILE_MARK in logdir.name else []
    found = []
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        if any(EVENT_FILE_MARK in f for f in files):
            found.append(Path(root))
    return found


def read_scalars(path: Path) -> Series:
    """Every scalar of one run (a directory of event files, or one file): TensorBoard's scalars
    (``add_scalar``) and scalar tensors (``tf.summary.scalar`` in TF2)."""
    accumulator_class = _accumulator_class()
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.SCALARS: 0, ea.TENSORS: 0, ea.IMAGES: 1, ea.AUDIO: 1, ea.HISTOGRAMS: 1,
                ea.COMPRESSED_HISTOGRAMS: 1}  # 0: keep every point
    accumulator = accumulator_class(str(path), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception as exc:  # a corrupt file: TensorBoard's reader says what it is
        raise UserError(f"{path}: not readable as TensorBoard events ({type(exc).__name__}: {exc})") from None
    tags = accumulator.Tags()
    series: Series = {}
    for tag in tags.get("scalars", []):
        series[tag] = [(int(e.step), float(e.wall_time), float(e.value)) for e in accumulator.Scalars(tag)]
    for tag in tags.get("tensors", []):
        if tag in series:
            continue
        points: list[Point] = []
        for e in accumulator.Tensors(tag):
            value = _scalar_of(e.tensor_proto)
            if value is None:
                break  # not a scalar series (text, a histogram): leave it out
            points.append((int(e.step), float(e.wall_time), value))
        else:
            if points:
                series[tag] = points
    return series


def _scalar_of(proto: Any) -> float | None:
    from tensorboard.util import tensor_util

    try:
        array = tensor_util.make_ndarray(proto)
    except Exception:
        return None
    if array.size != 1 or array.dtype.kind not in "fiub":
        return None
    return float(array.reshape(-1)[0])
