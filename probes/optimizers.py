"""The torch optimizer inside a wrapper (Accelerate, Lightning), and optimizer steps given a closure."""

from __future__ import annotations

from typing import Any, Callable

import torch

#: Where wrappers keep the optimizer they wrap: Accelerate's ``AcceleratedOptimizer.optimizer``,
#: Lightning's ``LightningOptimizer._optimizer`` (also its ``.optimizer``), and ``.optim``.
WRAPPED_ATTRIBUTES = ("optimizer", "_optimizer", "optim")
#: Most wrappers looked through (they can nest; a cycle is caught by this bound too).
MAX_DEPTH = 8


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer whose step hooks see every step the training takes.

    ``optimizer`` itself when it is a working ``torch.optim.Optimizer`` (one whose
    ``Optimizer.__init__`` ran: it has step hooks), else the one it wraps, looked for in
    ``WRAPPED_ATTRIBUTES``, through nested wrappers. Accelerate's ``AcceleratedOptimizer``
    subclasses ``Optimizer`` without running its ``__init__``, and Lightning's
    ``LightningOptimizer`` takes the class of the optimizer it wraps: both are looked through.
    ``ZeroRedundancyOptimizer`` is a working optimizer over all the parameters (the one in its
    ``.optim`` holds only this rank's shard), so it is kept as it is.

    Raises:
        TypeError: nothing found is a torch optimizer (one line, naming the type given).
    """
    current = optimizer
    for _ in range(MAX_DEPTH):
        if _has_step_hooks(current):
            return current
        inner = _wrapped(current)
        if inner is None:
            break
        current = inner
    looked = ", ".join(f".{name}" for name in WRAPPED_ATTRIBUTES)
    raise TypeError(
        f"{type(optimizer).__name__} is not a torch.optim.Optimizer and wraps none in {looked}: "
        "pass the torch optimizer the training steps"
    )


def unwrap_optimizer(optimizer: Any) -> Any:
    """``torch_optimizer(optimizer)``, or ``optimizer`` itself when it wraps none (never raises)."""
    try:
        return torch_optimizer(optimizer)
    except TypeError:
        return optimizer


def _has_step_hooks(value: Any) -> bool:
    # In the instance's own __dict__: LightningOptimizer forwards unknown attributes to the
    # optimizer it wraps, so hasattr() would find that one's hooks.
    return isinstance(value, torch.optim.Optimizer) and "_optimizer_step_pre_hooks" in getattr(value, "__dict__", ())


def _wrapped(wrapper: Any) -> Any:
    for name in WRAPPED_ATTRIBUTES:
        try:
            inner = getattr(wrapper, name, None)
        except Exception:  # a property that fails: not this attribute
            continue
        if inner is not None and inner is not wrapper and hasattr(inner, "param_groups") and callable(getattr(inner, "step", None)):
            return inner
    return None


def after_closure(args: tuple[Any, ...], kwargs: dict[str, Any], hook: Callable[[], Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """For a step pre-hook: the step's arguments with its closure made to call ``hook`` after it.

    An optimizer given a closure (``optimizer.step(closure)``, as Lightning always steps) calls
    it inside ``step`` to compute the gradients: a pre-hook runs before they exist. ``hook``
    runs once, when the closure first returns (LBFGS calls it again at other weights): the
    gradients are then those the update uses (after any clipping the closure did) and the
    weights still those before it. The closure's result and exceptions pass through unchanged.

    Args:
        args: the positional arguments of ``step`` as a pre-hook gets them (the optimizer first).
        kwargs: its keyword arguments.
        hook: called without arguments; it must not raise.

    Returns:
        ``(args, kwargs)`` for the pre-hook to return, or None when the step has no closure.
    """
    closure = kwargs.get("closure")
    if closure is None and len(args) > 1:
        closure = args[1]
    if not callable(closure):
        return None
    called = False

    def closure_then_hook(*a: Any, **k: Any) -> Any:
        nonlocal called
        result = closure(*a, **k)
        if not called:
            called = True
            hook()
        return result

    if kwargs.get("closure") is not None:
        return args, {**kwargs, "closure": closure_then_hook}
    return (args[0], closure_then_hook, *args[2:]), kwargs
