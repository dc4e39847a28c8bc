"""Tests of lrtui.system: a fake NVML module with realistic readings, the real pynvml here, psutil."""

from __future__ import annotations

import os
import types
from dataclasses import dataclass

import pytest

from lrtui.system import GpuReading, SystemSampler


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


@dataclass
class _Util:
    gpu: int
    memory: int


@dataclass
class _Memory:
    total: int
    free: int
    used: int


def make_fake_nvml(gpus: list[dict], init_error: str | None = None) -> types.ModuleType:
    """A real module object with pynvml's names, backed by ``gpus`` (one dict per device).

    A value that is an exception instance is raised by the matching call, as NVML does for a
    sensor a device lacks.
    """
    nvml = types.ModuleType("fake_pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.calls = {"init": 0, "shutdown": 0}

    def value(handle: int, key: str):
        v = gpus[handle][key]
        if isinstance(v, Exception):
            raise v
        return v

    def nvmlInit() -> None:
        nvml.calls["init"] += 1
        if init_error:
            raise FakeNVMLError(init_error)

    def nvmlShutdown() -> None:
        nvml.calls["shutdown"] += 1

    def nvmlDeviceGetTemperature(handle: int, sensor: int) -> int:
        assert sensor == nvml.NVML_TEMPERATURE_GPU
        return value(handle, "temp")

    nvml.nvmlInit = nvmlInit
    nvml.nvmlShutdown = nvmlShutdown
    nvml.nvmlDeviceGetCount = lambda: len(gpus)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: value(h, "name")
    nvml.nvmlDeviceGetUtilizationRates = lambda h: _Util(value(h, "util"), 30)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: _Memory(
        value(h, "total"), value(h, "total") - value(h, "used"), value(h, "used"))
    nvml.nvmlDeviceGetTemperature = nvmlDeviceGetTemperature
    nvml.nvmlDeviceGetPowerUsage = lambda h: value(h, "power_mw")
    return nvml


#: Two devices as an 8-GPU H100 node reports them; the second has no power sensor.
H100 = {"name": "NVIDIA H100 80GB HBM3", "util": 87, "used": 61_203_283_968,
        "total": 85_520_809_984, "temp": 64, "power_mw": 512_345}
A10 = {"name": b"NVIDIA A10", "util": 3, "used": 1_048_576_000, "total": 24_146_608_128,
       "temp": 38, "power_mw": FakeNVMLError("Not Supported")}


def test_fake_nvml_readings_are_converted_to_units() -> None:
    nvml = make_fake_nvml([H100, A10])
    sampler = SystemSampler(nvml=nvml)
    assert sampler.nvml_error is None
    first, second = sampler.gpus()
    assert first == GpuReading(0, "NVIDIA H100 80GB HBM3", 87.0, 61_203_283_968, 85_520_809_984,
                               64.0, 512.345)
    # bytes names decoded; a sensor that raises degrades only its own field
    assert second.name == "NVIDIA A10"
    assert second.power is None
    assert second.temp == 38.0 and second.util == 3.0
    sampler.close()
    sampler.close()
    assert nvml.calls == {"init": 1, "shutdown": 1}
    assert sampler.gpus() == []


def test_failing_init_is_an_answer() -> None:
    nvml = make_fake_nvml([H100], init_error="Driver Not Loaded")
    sampler = SystemSampler(nvml=nvml)
    assert sampler.nvml_error == "NVML not available: Driver Not Loaded"
    assert sampler.gpus() == []


def test_no_gpu_is_said_in_one_line() -> None:
    sampler = SystemSampler(nvml=make_fake_nvml([]))
    assert sampler.gpus() == []
    assert sampler.nvml_error == "NVML found no GPU"


def test_real_pynvml_without_library() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # a machine with a GPU: the sampler must read it instead
        pynvml.nvmlShutdown()
        with SystemSampler() as sampler:
            assert sampler.nvml_error is None and sampler.gpus()
        return
    with SystemSampler() as sampler:
        assert sampler.nvml_error is not None
        assert sampler.nvml_error.startswith("NVML not available: ")
        assert "\n" not in sampler.nvml_error
        assert sampler.gpus() == []


def test_process_and_host_readings() -> None:
    with SystemSampler(nvml=make_fake_nvml([])) as sampler:
        me = sampler.process()
        assert me["rss"] > 1_000_000
        sum(i * i for i in range(300_000))  # some CPU time between the two readings
        again = sampler.process(os.getpid())
        assert again["cpu_percent"] >= 0.0
        host = sampler.host()
        assert 0 < host["mem_used"] < host["mem_total"]
        assert 0.0 <= host["cpu_percent"] <= 100.0
        # a pid that does not exist: None values, no exception
        gone = sampler.process(2**22 + 12345)
        assert gone == {"cpu_percent": None, "rss": None}


def test_reading_round_trips_through_a_system_event() -> None:
    reading = GpuReading(1, "NVIDIA H100 80GB HBM3", 55.0, 10**9, 8 * 10**10, 50.0, None)
    event = {"kind": "system", "step": 3, "time": 1.0, "source": "probe", "cpu_percent": 99.0,
             **reading.as_event_fields()}
    assert GpuReading.from_event(event) == reading
    assert GpuReading.from_event({"kind": "system", "step": 3, "time": 1.0, "cpu_percent": 5}) is None
