"""What the framework callbacks share: the probe's keywords checked early, a framework's metrics as user metrics."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Iterable, Mapping

import torch

from lrtui.runlog.format import RESERVED_FIELDS
from probes.faults import Faults
from probes.probe import Probe

#: Probe arguments a callback fills in itself from the trainer.
FROM_THE_TRAINER = ("model", "optimizer", "run_dir")


def check_probe_options(options: Mapping[str, Any], callback: str) -> None:
    """Raise ``TypeError`` now, at the callback's construction, for a keyword ``Probe`` does not take.

    Otherwise the mistake would surface only when training starts (or, as a disabled probe,
    not at all).
    """
    accepted = [name for name in inspect.signature(Probe).parameters if name not in FROM_THE_TRAINER]
    for name in options:
        if name in FROM_THE_TRAINER:
            raise TypeError(f"{callback}: {name!r} comes from the trainer; pass only the Probe's keywords")
        if name not in accepted:
            raise TypeError(f"{callback}: unknown Probe keyword {name!r} (accepted: {', '.join(accepted)})")


def start_probe(model: Any, optimizer: Any, run_dir: Any, options: dict[str, Any], trainer: dict[str, Any]) -> Probe | None:
    """The ``Probe`` for a trainer's run, with the trainer's settings in ``meta.json`` ``extra.trainer``.

    The callbacks make it when training starts: an argument it refuses (a ``ValueError``) is
    said on stderr in one line and the training goes on without a probe, as it would for an
    error inside one.
    """
    options = dict(options)
    extra = options.get("extra")
    if extra is None or isinstance(extra, dict):
        options["extra"] = {"trainer": trainer, **(extra or {})}
    try:
        return Probe(model, optimizer, run_dir, **options)
    except Exception as exc:
        Faults().fail("probe", exc)
        return None


def resumed_at(options: dict[str, Any], global_step: Any) -> None:
    """A training resumed from a checkpoint (the trainer's step count > 0 at its start) continues
    the run in its directory, numbering steps from the trainer's, unless ``resume`` was given."""
    if "resume" in options or not isinstance(global_step, int) or global_step <= 0:
        return
    options["resume"] = True
    options.setdefault("start_step", global_step)


def user_metrics(values: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The numbers (and strings) among ``values``, ready for ``probe.log``.

    One-element tensors are read (one host copy each: metrics come once per evaluation, not
    per step); names ``probe.log`` reserves for the event itself (``step``, ``time``, ``kind``)
    and those in ``skip`` are left out, as is anything that is not a number or a string.
    """
    skipped = set(skip) | set(RESERVED_FIELDS)
    out: dict[str, Any] = {}
    for name, value in values.items():
        name = str(name)
        if name in skipped:
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.detach().reshape(()).item()
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, numbers.Real):  # numpy scalars too
            out[name] = float(value)
        elif isinstance(value, str):
            out[name] = value
    return out
