"""Activation sparsity: the fraction of exactly-zero outputs of each ReLU-like layer."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

#: Layers whose outputs are exactly zero on a whole half-line, so "zero" means "inactive".
RELU_LIKE = (torch.nn.ReLU, torch.nn.ReLU6)


class ZeroFractions:
    """Collects, during one forward pass, the zero fraction of every ReLU-like module's output."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.layers = [(name or type(m).__name__, m) for name, m in module.named_modules() if isinstance(m, RELU_LIKE)]
        self._values: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Forward hooks on the layers while the block runs (removed after, even on error)."""
        self._values = {}
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.numel():
                # A layer called twice in one pass (weight sharing) counts its last call.
                self._values[name] = (output.detach() == 0).sum().to(torch.float64) / output.numel()

        return hook

    def result(self) -> tuple[list[str], list[float]]:
        """Layer names and their zero fractions for the last recorded pass (one host copy)."""
        names = [n for n, _ in self.layers if n in self._values]
        if not names:
            return [], []
        values = torch.stack([self._values[n].to(torch.float64).cpu() for n in names]).tolist()
        return names, values
