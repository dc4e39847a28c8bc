"""Attention in the probe's own passes: the math kernel, the one with a double backward.

A Hessian-vector product is the gradient of a gradient. ``F.scaled_dot_product_attention`` (used
by ``nn.MultiheadAttention``, ``nn.Transformer*`` and most Hugging Face models) picks a fused
kernel (flash, memory-efficient, the CPU flash kernel) whose backward has no derivative of its
own, so the product fails on any attention model. The probe's passes on the hessian batch run
under ``sdpa_kernel(SDPBackend.MATH)``: the same attention, computed with ordinary ops.
Training keeps the kernels it chose.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

try:  # torch 2.3+
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - older torch: nothing to select
    sdpa_kernel = None


def math_kernel() -> ContextManager[Any]:
    """A context in which scaled-dot-product attention uses the math kernel."""
    if sdpa_kernel is None:  # pragma: no cover
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def with_math_attention(closure: Callable[[], Any]) -> Callable[[], Any]:
    """``closure`` run under :func:`math_kernel`."""

    def run() -> Any:
        with math_kernel():
            return closure()

    return run
