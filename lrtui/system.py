"""GPU, process and host readings (NVML and psutil) where a missing GPU or library is an answer, not a crash."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, TypeVar

import psutil

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one moment. A field NVML could not read is None.

    Attributes:
        index: NVML device index.
        name: product name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        util: GPU utilization over the last sample period, percent.
        mem_used: device memory in use, bytes.
        mem_total: device memory in all, bytes.
        temp: core temperature, °C.
        power: power draw, watts.
    """

    index: int
    name: str | None
    util: float | None
    mem_used: int | None
    mem_total: int | None
    temp: float | None
    power: float | None

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> GpuReading | None:
        """The GPU part of a ``system`` event the probe logged, or None when it has none."""
        index = event.get("gpu_index")
        if not isinstance(index, int) or isinstance(index, bool):
            return None

        def number(key: str) -> Any:
            value = event.get(key)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        name = event.get("gpu_name")
        return cls(
            index=index,
            name=name if isinstance(name, str) else None,
            util=number("gpu_util"),
            mem_used=number("gpu_mem_used"),
            mem_total=number("gpu_mem_total"),
            temp=number("gpu_temp"),
            power=number("gpu_power"),
        )

    def as_event_fields(self) -> dict[str, Any]:
        """The ``gpu_*`` fields of a ``system`` event (docs/run-format.md) for this reading."""
        return {
            "gpu_index": self.index,
            "gpu_name": self.name,
            "gpu_util": self.util,
            "gpu_mem_used": self.mem_used,
            "gpu_mem_total": self.mem_total,
            "gpu_temp": self.temp,
            "gpu_power": self.power,
        }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SystemSampler:
    """Reads local GPUs through NVML and CPU/memory through psutil.

    Construction never raises: without the NVML library (no driver, no GPU, a laptop) ``gpus()``
    returns ``[]`` and ``nvml_error`` says why in one line. A reading that fails for one field
    (a GPU without power sensors, a device that fell off the bus) leaves that field None.

    Example:
        >>> s = SystemSampler()
        >>> s.gpus() if s.nvml_error is None else s.nvml_error   # doctest: +SKIP
        'NVML not available: NVML Shared Library Not Found'
        >>> s.close()

    Args:
        nvml: the NVML module to use; default ``pynvml`` (package nvidia-ml-py). Tests pass a
            module of their own.
    """

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self.nvml_error: str | None = None
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._processes: dict[int, psutil.Process] = {}
        if nvml is None:
            try:
                import pynvml  # optional dependency, loaded once
            except Exception as exc:  # not installed, or broken: still an answer
                self.nvml_error = f"NVML not available: {_one_line(exc)}"
                return
            nvml = pynvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.nvml_error = f"NVML not available: {_one_line(exc)}"
            return
        self._nvml = nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self.nvml_error = f"NVML cannot list GPUs: {_one_line(exc)}"
            self._handles = []
        # "No GPU" is an answer as well, and it is worth saying in the same one line.
        if self.nvml_error is None and not self._handles:
            self.nvml_error = "NVML found no GPU"

    # -- GPUs ----------------------------------------------------------------------------

    def _read(self, call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except Exception:  # one field unreadable: the rest of the reading still counts
            return None

    def gpus(self) -> list[GpuReading]:
        """A reading of every local GPU (``[]`` without NVML)."""
        nvml = self._nvml
        if nvml is None:
            return []
        readings = []
        for index, handle in enumerate(self._handles):
            name = self._read(nvml.nvmlDeviceGetName, handle)
            if isinstance(name, bytes):  # older bindings return bytes
                name = name.decode(errors="replace")
            util = self._read(lambda h: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu), handle)
            memory = self._read(nvml.nvmlDeviceGetMemoryInfo, handle)
            temp = self._read(
                lambda h: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)), handle
            )
            # NVML reports milliwatts.
            power = self._read(lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, handle)
            readings.append(
                GpuReading(
                    index=index,
                    name=name if isinstance(name, str) else None,
                    util=util,
                    mem_used=self._read(lambda m: int(m.used), memory) if memory is not None else None,
                    mem_total=self._read(lambda m: int(m.total), memory) if memory is not None else None,
                    temp=temp,
                    power=power,
                )
            )
        return readings

    # -- CPU and memory ------------------------------------------------------------------

    def process(self, pid: int | None = None) -> dict[str, Any]:
        """CPU percent (of one core, since the previous call for this pid) and resident memory
        (bytes) of a process, this one by default. Values are None when the process is gone."""
        pid = os.getpid() if pid is None else pid
        proc = self._processes.get(pid)
        try:
            if proc is None:
                proc = psutil.Process(pid)
                self._processes[pid] = proc
            with proc.oneshot():
                return {"cpu_percent": proc.cpu_percent(interval=None), "rss": proc.memory_info().rss}
        except (psutil.Error, OSError):
            self._processes.pop(pid, None)
            return {"cpu_percent": None, "rss": None}

    def host(self) -> dict[str, Any]:
        """Whole-machine CPU percent (since the previous call) and memory in use / in all (bytes)."""
        cpu = self._read(lambda: psutil.cpu_percent(interval=None))
        memory = self._read(psutil.virtual_memory)
        return {
            "cpu_percent": cpu,
            "mem_used": int(memory.used) if memory is not None else None,
            "mem_total": int(memory.total) if memory is not None else None,
        }

    def close(self) -> None:
        """Release NVML (safe to call twice)."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        self._nvml = None
        self._handles = []

    def __enter__(self) -> SystemSampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["GpuReading", "SystemSampler"]
