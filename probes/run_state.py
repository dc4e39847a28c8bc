"""Leave a training run exactly as it was after the probe ran its own forward passes on the model."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

#: Seed for the probe's forward passes: the same dropout mask every time, so successive
#: sharpness estimates measure the same function and warm starts stay good.
PROBE_SEED = 20241029


@contextlib.contextmanager
def untouched_run(
    module: torch.nn.Module, device: torch.device, seed: int = PROBE_SEED
) -> Iterator[Callable[[], None]]:
    """Run probe forward passes without changing anything the training will see afterwards.

    Restores, bitwise: every buffer (BatchNorm running statistics and batch counters), the
    train/eval mode of every module, and the CPU generator plus the generator of the model's
    CUDA device (dropout in the probe's passes uses a fixed seed instead of the training's
    stream; the block gets a ``reseed()`` to call before each pass that must see the same
    mask). Parameters, ``.grad`` and optimizer state are never written by the probe: it uses
    ``torch.autograd.grad``, which accumulates nothing.
    """
    buffers = [b for b in module.buffers()]
    saved_buffers = [b.detach().clone() for b in buffers]
    modes = [(m, m.training) for m in module.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_index = device.index if device.type == "cuda" else None
    if device.type == "cuda" and cuda_index is None:
        cuda_index = torch.cuda.current_device()
    cuda_rng = torch.cuda.get_rng_state(cuda_index) if cuda_index is not None else None

    def reseed() -> None:
        torch.default_generator.manual_seed(seed)
        if cuda_index is not None:
            # Only this device's generator: torch.manual_seed would reseed every GPU.
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)

    try:
        reseed()
        yield reseed
    finally:
        with torch.no_grad():
            for buffer, saved in zip(buffers, saved_buffers):
                buffer.copy_(saved)
        for m, training in modes:
            if m.training != training:
                m.train(training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, cuda_index)
