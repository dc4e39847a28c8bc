"""The thread that samples the local machine (GPUs, CPU, memory) for the system panel."""

from __future__ import annotations

import threading
from typing import Callable

from lrtui.app.messages import Post, SystemSampled
from lrtui.system import SystemSampler


class SystemSource:
    """Samples local GPUs, CPU and memory about once a second; posts each sample."""

    def __init__(self, sampler_factory: Callable[[], SystemSampler], post: Post, interval: float = 1.0) -> None:
        self.sampler_factory = sampler_factory
        self.post = post
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="system", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        sampler = self.sampler_factory()
        try:
            sampler.host()  # psutil's CPU percent counts from the previous call
            while True:
                self.post(SystemSampled(sampler.gpus(), sampler.host(), sampler.nvml_error))
                if self.stop.wait(self.interval):
                    break
        finally:
            sampler.close()

    def close(self) -> None:
        self.stop.set()


__all__ = ["SystemSource"]
