"""Mixed precision in the probe: the steps a GradScaler skipped, and sharpness in float32 under autocast.

A ``torch.amp.GradScaler`` skips an optimizer step whose gradients hold inf/NaN (fp16 overflow at
too large a loss scale) and halves its scale. It skips in one of two ways:

* most optimizers: ``scaler.step`` never calls ``optimizer.step``, so the probe's step hooks
  never fire. ``probe.step`` then sees no optimizer step since the last call; with
  ``Probe(..., scaler=scaler)`` the scaler confirms it stepped (see :meth:`SkippedSteps.at_probe_step`).
* fused optimizers (``Adam(fused=True)`` and others with ``_step_supports_amp_scaling``): the
  scaler calls ``optimizer.step`` with ``optimizer.found_inf`` set and the fused kernel leaves the
  weights alone. The pre-step hook keeps that flag (a device tensor, read only when the step events
  are written in a batch), so this needs no ``scaler=``.

Either way the step gets its own index, as the loop counter, Hugging Face's ``global_step`` and
Lightning's count it, and one ``step`` event with ``"skipped": true``, its loss and LRs, and no
``grad_norm``/``update_norm`` (the gradients overflowed, the weights did not move). The gradient
norms of the other steps are of unscaled gradients: ``scaler.step`` unscales before it calls
``optimizer.step`` and a fused optimizer unscales ``.grad`` in place, and the probe reads them after.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch

#: Step-event fields a skipped step does not have: its gradients overflowed, its weights did not move.
SKIPPED_DROPS = ("grad_norm", "update_norm")


class SkippedSteps:
    """Finds the optimizer steps a GradScaler skipped and writes them as ``skipped`` step events.

    Args:
        optimizer: the optimizer the probe hooks.
        scaler: the run's ``torch.amp.GradScaler`` (or ``torch.cuda.amp.GradScaler``), or None: then
            only fused optimizers' skips are seen.
    """

    def __init__(self, optimizer: Any, scaler: Any = None) -> None:
        self.optimizer = optimizer
        self.scaler = scaler
        self._steps_seen = 0  # StepMetrics.steps_taken at the last probe.step
        # The scaler's per-optimizer state dict at the last probe.step: update() replaces it.
        self._states = getattr(scaler, "_per_optimizer_states", None)
        # Fused optimizers: (step, found_inf tensor, lrs, loss) of steps not yet written.
        self._flags: list[list[Any]] = []

    # -- fused optimizers: the pre-step hook --------------------------------------------------

    def before_step(self, optimizer: Any, step: int) -> None:
        """Pre-step hook: keep the fused path's ``found_inf`` of step ``step`` (no device sync)."""
        found_inf = optimizer.__dict__.get("found_inf")  # set by GradScaler.step for fused optimizers
        if isinstance(found_inf, torch.Tensor):
            self._flags.append([step, found_inf.detach(), [g["lr"] for g in optimizer.param_groups], None])

    # -- other optimizers: probe.step ----------------------------------------------------------

    def at_probe_step(self, steps: Any, loss: Any) -> list[dict[str, Any]] | None:
        """At ``probe.step``: the events to write if the scaler skipped the step just taken, else None.

        A skipped step is one where ``optimizer.step`` did not run since the last ``probe.step``
        while the scaler did step: its state for this optimizer is "stepped" (``probe.step`` before
        ``scaler.update()``), or ``update()`` ran since the last ``probe.step`` (after it: each
        ``update()`` starts a new per-optimizer state dict). That costs no torch call per step, and
        a ``probe.step`` without any ``scaler.step`` (a micro-batch) is not taken for a skip.
        A skipped step takes the next index: ``steps.steps_taken`` goes up by one.
        """
        flags = self._flags
        if flags and loss is not None and flags[-1][0] == steps.steps_taken - 1:
            flags[-1][3] = _detached(loss)
        scaler = self.scaler
        if scaler is None:
            return None
        taken, last = steps.steps_taken, self._steps_seen
        self._steps_seen = taken
        states = getattr(scaler, "_per_optimizer_states", None)
        updated, self._states = states is not self._states, states
        if taken != last or not isinstance(states, dict) or not _enabled(scaler):
            return None
        if not updated and not self._stepped(states):
            return None
        steps.steps_taken = self._steps_seen = taken + 1
        event = {
            "kind": "step", "step": taken, "time": time.time(), "loss": _loss_value(loss),
            "lr": [_as_float(g["lr"]) for g in self.optimizer.param_groups], "skipped": True,
        }
        return steps.flush() + [event]  # the measured steps before it first, in step order

    def _stepped(self, states: dict[Any, Any]) -> bool:
        """True when ``scaler.step`` ran for this optimizer since the last ``update()``."""
        # The scaler may have been given the torch optimizer inside a wrapper (Accelerate's).
        for opt in (self.optimizer, getattr(self.optimizer, "optimizer", None)):
            state = states.get(id(opt)) if opt is not None else None
            if state is not None and getattr(state.get("stage"), "name", None) == "STEPPED":
                return True
        return False

    # -- writing -------------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the fused path's pending flags (a rank that writes nothing)."""
        self._flags.clear()

    def mark(self, events: list[dict[str, Any]], final: bool = False) -> list[dict[str, Any]]:
        """Step events about to be written, with the fused path's skipped steps marked (and added,
        for skipped steps the stride left unmeasured). Flags of steps after the last event wait for
        the next batch unless ``final``."""
        if not self._flags or (not events and not final):
            return events
        last = events[-1]["step"] if events and not final else None
        due = [f for f in self._flags if last is None or f[0] <= last]
        if not due:
            return events
        self._flags = self._flags[len(due):]
        found = torch.stack([f[1].reshape(-1)[0].float() for f in due]).cpu().tolist()  # one copy per batch
        skipped = {f[0]: f for f, inf in zip(due, found) if inf}
        if not skipped:
            return events
        for event in events:
            if skipped.pop(event["step"], None) is not None:
                event["skipped"] = True
                for name in SKIPPED_DROPS:
                    event.pop(name, None)
        added = [
            {"kind": "step", "step": step, "time": time.time(), "loss": _loss_value(loss),
             "lr": [_as_float(lr) for lr in lrs], "skipped": True}
            for step, _, lrs, loss in skipped.values()
        ]
        return sorted(events + added, key=lambda e: e["step"]) if added else events


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off on every device type, so the probe's own passes run in the parameters' dtype
    (float32 for a float32 model trained under bf16/fp16 autocast) whatever context it is called in."""
    on = [d for d in _AUTOCAST_DEVICES if _autocast_enabled(d)]
    if not on:  # the common case: nothing to undo, and entering autocast is not free
        yield
        return
    with contextlib.ExitStack() as stack:
        for device_type in on:
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def _autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch before 2.4: no device argument
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled()) if device_type == "cuda" else True


def _autocast_devices() -> tuple[str, ...]:
    """The device types autocast works on in this build (asking for another one warns)."""
    available = getattr(torch.amp, "is_autocast_available", None)
    found = []
    for device_type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        try:
            if available is None:
                ok = device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_available())
            else:
                ok = bool(available(device_type))
            if device_type != "cpu" and ok:
                ok = bool(getattr(torch, device_type).is_available())
        except Exception:  # a device type this build does not know
            ok = False
        if ok:
            found.append(device_type)
    return tuple(found)


_AUTOCAST_DEVICES = _autocast_devices()


def in_full_precision(closure: Callable[[], Any]) -> Callable[[], Any]:
    """``closure`` run under :func:`full_precision`."""

    def run() -> Any:
        with full_precision():
            return closure()

    return run


def _enabled(scaler: Any) -> bool:
    is_enabled = getattr(scaler, "is_enabled", None)
    return bool(is_enabled()) if callable(is_enabled) else False


def _detached(loss: Any) -> Any:
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


def _loss_value(loss: Any) -> float | None:
    if loss is None:
        return None
    if isinstance(loss, torch.Tensor):
        return float(loss.detach().reshape(-1)[0]) if loss.numel() else None
    return float(loss)


def _as_float(value: Any) -> float:
    return float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)
