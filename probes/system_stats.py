"""Device stats from inside the training process: a thread that samples CPU, RSS and the model's GPU."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import torch

from lrtui.system import SystemSampler


def nvml_index(device: torch.device) -> int | None:
    """The NVML index of a CUDA device (NVML ignores ``CUDA_VISIBLE_DEVICES``), None for CPU."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    try:
        return int(visible[index])
    except (IndexError, ValueError):  # unset, or given as UUIDs: assume the numbering agrees
        return index


class SystemStats:
    """Samples at most once per ``interval`` in a daemon thread and writes ``system`` events.

    Args:
        write: ``write(kind, step, **fields)``, thread-safe (``RunWriter.write``).
        current_step: the last optimizer step, for the events' ``step``.
        fail: ``fail(source, exc)``, the probe's fail-open reporter.
        gpu: NVML index of the GPU to report, or None (CPU model: process stats only).
        sampler: a ``SystemSampler`` to use (tests pass one with a fake NVML); by default one is
            made inside the thread, so NVML start-up never delays the training.
        interval: seconds between samples.
    """

    def __init__(
        self,
        write: Callable[..., None],
        current_step: Callable[[], int | None],
        fail: Callable[[str, BaseException | str], None],
        *,
        gpu: int | None,
        sampler: SystemSampler | None = None,
        interval: float = 1.0,
    ) -> None:
        self._write = write
        self._current_step = current_step
        self._fail = fail
        self._gpu = gpu
        self._sampler = sampler
        self._own_sampler = sampler is None
        self._interval = max(1.0, float(interval))  # "at most once a second"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrtui-probe-system", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (waits at most a few seconds)."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            sampler = self._sampler if self._sampler is not None else SystemSampler()
        except Exception as exc:
            self._fail("system", exc)
            return
        gpu = self._gpu
        if gpu is not None and sampler.nvml_error is not None:
            self._fail("gpu", sampler.nvml_error)  # the process stats go on without it
            gpu = None
        sampler.process()  # psutil's CPU percent counts from the previous call
        try:
            while not self._stop.wait(self._interval):
                fields: dict[str, Any] = {"source": "probe"}
                fields.update(sampler.process())
                if gpu is not None:
                    reading = next((r for r in sampler.gpus() if r.index == gpu), None)
                    if reading is None:
                        self._fail("gpu", f"NVML has no GPU with index {gpu}")
                        gpu = None
                    elif _unanswered(reading):
                        # Every read failed (a GPU fallen off the bus, a dead driver): say so once
                        # rather than log empty GPU fields for the rest of the run.
                        self._fail("gpu", f"NVML stopped answering for GPU {gpu}")
                        gpu = None
                    else:
                        fields.update(reading.as_event_fields())
                self._write("system", self._current_step(), **fields)
        except Exception as exc:
            self._fail("system", exc)
        finally:
            if self._own_sampler:
                sampler.close()


def _unanswered(reading: Any) -> bool:
    """True when NVML gave not one field of a GPU reading."""
    return all(
        value is None
        for value in (reading.name, reading.util, reading.mem_used, reading.mem_total, reading.temp, reading.power)
    )
