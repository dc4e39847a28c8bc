"""torch.compile in the probe: its own forward passes run the model eagerly.

Sharpness needs double backward (a Hessian-vector product is the gradient of a gradient), which
graphs compiled by ``torch.compile`` (AOTAutograd) do not support. Training runs compiled as the
user set it up; the probe's passes on the hessian batch run the original module's Python code
instead: ``Probe`` takes ``_orig_mod`` of a compiled wrapper (``probes.distributed.unwrap_module``)
and runs its closures under ``torch.compiler.set_stance("force_eager")``, which also covers a model
compiled in place (``model.compile()``), compiled submodules and compiled functions in ``forward``,
and a user's ``hessian_loss`` that calls the compiled model. The graph those passes build is plain
autograd, so double backward works. The compiled code and its caches are left as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

#: The notice the probe writes once when it sees a compiled model and will measure sharpness.
NOTICE = (
    "the model is compiled (torch.compile): sharpness runs on the original module, eagerly, "
    "since double backward through a compiled graph is not supported; training stays compiled"
)


def is_compiled(model: Any) -> bool:
    """True when ``model``, a wrapper around it or any of its submodules is compiled."""
    seen = 0
    while seen < 8:  # the chain of wrappers (DDP of compile of ...), bounded as unwrap_module is
        seen += 1
        if _compiled_here(model):
            return True
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module) or inner is model:
            break
        model = inner
    if isinstance(model, torch.nn.Module):
        return any(_compiled_here(m) for m in model.modules())
    return False


def _compiled_here(module: Any) -> bool:
    if isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
        return True  # an OptimizedModule, what torch.compile(module) returns
    return getattr(module, "_compiled_call_impl", None) is not None  # module.compile(), in place


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Compiled code runs as its original Python inside this block (torch >= 2.6; before, a no-op:
    then only the unwrapped ``_orig_mod`` runs eagerly)."""
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield


def run_eagerly(closure: Callable[[], Any]) -> Callable[[], Any]:
    """``closure`` run under :func:`eager`."""

    def run() -> Any:
        with eager():
            return closure()

    return run
