"""The cheap per-step metrics: loss, gradient, update and weight norms, learning rates.

They are taken by optimizer step hooks and kept as device tensors; the host sees them in
batches (one copy per ``flush_every`` measured steps or per ``flush_seconds``), so on CUDA no
step waits for the device.
"""

from __future__ import annotations

import math
import time
from operator import attrgetter, itemgetter
from typing import Any, Sequence

import numpy as np
import torch


#: Most parameter elements for which a CPU model's per-step norms are taken by ``_HostNorms``.
#: A torch call costs ~3-5 µs of dispatch and a CPU foreach kernel visits its tensors one by one
#: (~4 µs per norm, three norms per parameter); copies into one numpy buffer and batched BLAS
#: dots at flush cost less. On CUDA the fused foreach kernels stay.
FLAT_MAX_ELEMENTS = 1 << 22
#: Bytes of copies (gradients, weights before and after) ``_HostNorms`` may hold between flushes
#: (always at least one step's); a model too large for ``flush_every`` steps of them is flushed
#: more often.
HOST_BUFFER_BYTES = 32 << 20
#: Most parameter views ``_HostNorms`` keeps (two per parameter per slot).
HOST_MAX_VIEWS = 8192
#: Measured steps held before one flush when the user does not say (``flush_every=None``): on a
#: device, 32 steps of norm tensors; a CPU model's copies amortize the flush's fixed cost over
#: more steps (on the benchmark's MLP, 39 instead of 43 µs per step), and its buffer is bounded
#: by ``HOST_BUFFER_BYTES`` anyway. Both also flush every ``flush_seconds``.
DEVICE_FLUSH_EVERY = 32
HOST_FLUSH_EVERY = 128


#: What the pre-step hook keeps of a measured step until ``probe.step``: (step, slot, the LRs as
#: the param groups hold them, the gradients' references). A tuple: the hook runs every step,
#: and building one costs a fraction of an object's ``__init__``.
_Current = tuple[int, int, list[Any], list[Any]]
#: A measured step waiting for the flush: (step, its LRs, what the norm engine measured (see its
#: ``to_host``), the loss it keeps, ``time.perf_counter()`` at ``probe.step``).
_Done = tuple[int, list[Any], Any, Any, float]


class _ForeachNorms:
    """Per-parameter norms with one ``torch._foreach_*`` call each (fused kernels on CUDA).

    ``before`` copies the weights into a snapshot; ``measure`` turns it into Δw and takes the
    norms of the gradients, Δw and the weights in one call; ``to_host`` sums them per step.
    """

    capacity = 1 << 30  # steps it can hold until a flush: any number
    flush_every = DEVICE_FLUSH_EVERY  # its default batch

    def __init__(self, params: list[torch.Tensor], group_of: list[int], n_groups: int) -> None:
        self.detached = [p.detach() for p in params]  # share storage: see every update
        self.snapshot = [torch.empty_like(p) for p in self.detached]
        self.zero = torch.zeros((), dtype=self.detached[0].dtype, device=self.detached[0].device)
        self.group_of = np.asarray(group_of)
        self.n_groups = n_groups

    def gradients(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        zero = self.zero
        return [zero if (g := p.grad) is None else g for p in params]

    def before(self, slot: int, linked: bool) -> None:
        torch._foreach_copy_(self.snapshot, self.detached)

    def measure(self, grads: list[torch.Tensor], slot: int, loss: Any) -> tuple[Any, Any]:
        """(norms to keep until the flush, the loss to keep: a detached tensor or a number)."""
        torch._foreach_sub_(self.snapshot, self.detached)
        kept = loss.detach() if isinstance(loss, torch.Tensor) else loss
        return torch._foreach_norm(grads + self.snapshot + self.detached), kept

    def to_host(self, measured: list[Any], losses: list[Any]) -> tuple[np.ndarray, list[float | None]]:
        """Rows of (grad norm, update norm, weight norm, each param group's weight norm), and the
        losses as floats."""
        k, n = len(measured), len(self.detached)
        flat = torch.stack([t for norms in measured for t in norms]).to("cpu", torch.float64)
        sq = np.square(flat.numpy().reshape(k, 3 * n))
        out = np.empty((k, 3 + self.n_groups))
        out[:, 0] = sq[:, :n].sum(1)
        out[:, 1] = sq[:, n : 2 * n].sum(1)
        out[:, 2] = sq[:, 2 * n :].sum(1)
        group_sq = np.zeros((k, self.n_groups))
        np.add.at(group_sq, (slice(None), self.group_of), sq[:, 2 * n :])
        out[:, 3:] = group_sq
        return np.sqrt(out), _losses_to_host(losses)


class _HostNorms:
    """The same norms for a CPU model, from copies kept in one numpy buffer until the flush.

    Each measured step has a slot of three rows: the gradients, the weights before the step and
    the weights after it. Right after a training step every call is slow (its code and data have
    left the caches), so a step costs one call: a ``torch._foreach_copy_`` of the gradients, the
    new weights and the loss at ``probe.step``. The weights before a step are those after the
    step before it, copied then (linked, read at the flush); only a step that follows one not
    measured copies them at its pre-step hook (``np.concatenate``). The flush turns the rows into
    Δw and squared norms with one subtraction and one batched BLAS product for all slots.
    """

    flush_every = HOST_FLUSH_EVERY  # its default batch

    def __init__(self, params: list[torch.Tensor], group_of: list[int], n_groups: int, invariant: list[int], slots: int) -> None:
        sizes = [p.numel() for p in params]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.detached = [p.detach() for p in params]  # share storage: see every update
        # .numpy() of a CPU tensor shares its memory: these views see every update.
        self.weights = [p.numpy().reshape(-1) for p in self.detached]
        row_bytes = 3 * offsets[-1] * self.weights[0].itemsize
        self.capacity = max(1, min(slots, HOST_BUFFER_BYTES // max(1, row_bytes), HOST_MAX_VIEWS // (2 * len(params))))
        self.buffer = np.empty((self.capacity, 3, offsets[-1]), dtype=self.weights[0].dtype)
        rows = torch.from_numpy(self.buffer)
        # Per slot, rows 0 and 2 seen as one tensor per parameter: the destinations of its copy.
        self.targets = [
            [rows[s, r, a:b].view_as(p) for r in (0, 2) for a, b, p in zip(offsets, offsets[1:], params)]
            for s in range(self.capacity)
        ]
        self.befores = list(self.buffer[:, 1])
        self.linked = [False] * self.capacity  # before = the previous slot's after
        self.carry = np.empty(offsets[-1], dtype=self.buffer.dtype)  # the last flushed step's after
        self.carry_valid = False
        # Each slot's loss, float64 whatever the model's dtype; the targets with it appended.
        self.losses = torch.zeros(self.capacity, dtype=torch.float64)
        self.losses_np = self.losses.numpy()  # the same memory, read at the flush
        self.with_loss = [targets + [self.losses[s]] for s, targets in enumerate(self.targets)]
        self.zeros = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]
        # Weight norms of the scale-invariant groups (for their effective LR). trained_parameters
        # lists each group's parameters together, so a group is one span of the buffer.
        self.spans = [
            (offsets[group_of.index(g)], offsets[len(group_of) - group_of[::-1].index(g)], g)
            for g in invariant
            if g in group_of
        ]
        self.n_groups = n_groups

    @staticmethod
    def fits(params: list[torch.Tensor]) -> bool:
        """True when every parameter is a dense, contiguous CPU float32/float64 tensor of one dtype."""
        if not params or sum(p.numel() for p in params) > FLAT_MAX_ELEMENTS:
            return False
        first = params[0]
        return first.device.type == "cpu" and first.dtype in (torch.float32, torch.float64) and all(
            p.dtype == first.dtype and p.device == first.device and p.layout == torch.strided and p.is_contiguous()
            for p in params
        )

    def gradients(self, params: list[torch.Tensor]) -> list[Any]:
        return list(map(_GRAD, params))

    def before(self, slot: int, linked: bool) -> None:
        """``linked``: the step just before was measured, and its weights after are these."""
        if linked and (slot or self.carry_valid):
            self.linked[slot] = True
        else:
            self.linked[slot] = False
            np.concatenate(self.weights, out=self.befores[slot])

    def measure(self, grads: list[Any], slot: int, loss: Any) -> tuple[Any, Any]:
        """(the slot, the loss to keep). A scalar CPU loss tensor is copied in the same call."""
        if loss.__class__ is torch.Tensor:  # the common case, tried first: one call, no checks
            try:
                torch._foreach_copy_(self.with_loss[slot], grads + self.detached + [loss])
                return slot, _IN_SLOT
            except (TypeError, RuntimeError):  # a gradient that is None, a loss not a CPU scalar
                pass
        targets, sources = self.targets[slot], grads + self.detached
        if isinstance(loss, torch.Tensor) and loss.is_cpu and loss.dim() == 0:
            targets, sources = self.with_loss[slot], sources + [loss]
            kept: Any = _IN_SLOT
        else:
            kept = loss.detach() if isinstance(loss, torch.Tensor) else loss
        try:
            torch._foreach_copy_(targets, sources)
        except TypeError:  # a parameter without a gradient (None): it counts as zero
            zeros = self.zeros
            sources = [zeros[i] if g is None else g for i, g in enumerate(grads)] + sources[len(grads) :]
            torch._foreach_copy_(targets, sources)
        return slot, kept

    def to_host(self, measured: list[Any], losses: list[Any]) -> tuple[np.ndarray, list[float | None]]:
        k = len(measured)
        # The steps waiting for a flush hold slots 0..k-1 in order (a slot is its place in line:
        # a flush never happens between a step's hook and its probe.step).
        buffer, linked = self.buffer, np.array(self.linked[:k])
        before = buffer[:k, 1]
        if linked[1:].all():  # each step follows the one before: Δw from consecutive copies
            np.subtract(buffer[: k - 1, 2], buffer[1:k, 2], out=before[1:])
        else:
            follows = np.flatnonzero(linked[1:]) + 1
            before[follows] = buffer[follows - 1, 2]
            np.subtract(before[1:], buffer[1:k, 2], out=before[1:])
        np.subtract(self.carry if linked[0] else before[0], buffer[0, 2], out=before[0])  # Δw = before - after
        self.carry[:] = buffer[k - 1, 2]
        self.carry_valid = True
        rows = buffer[:k]
        out = np.zeros((k, 3 + self.n_groups))
        out[:, :3] = np.matmul(rows[:, :, None, :], rows[:, :, :, None])[:, :, 0, 0]
        for a, b, g in self.spans:
            part = rows[:, 2, a:b]
            out[:, 3 + g] = np.matmul(part[:, None, :], part[:, :, None])[:, 0, 0]
        in_slot = self.losses_np[:k].tolist()
        if any(loss is not _IN_SLOT for loss in losses):  # None, numbers, other tensors
            others = _losses_to_host([None if loss is _IN_SLOT else loss for loss in losses])
            in_slot = [v if loss is _IN_SLOT else o for v, o, loss in zip(in_slot, others, losses)]
        return np.sqrt(out), in_slot


#: Marks a loss that ``_HostNorms`` copied into its slot.
_IN_SLOT = object()


def trained_parameters(optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[int]]:
    """The optimizer's parameters (each once) and the index of the param group each belongs to."""
    params: list[torch.Tensor] = []
    groups: list[int] = []
    seen: set[int] = set()
    for gi, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) in seen:
                continue
            seen.add(id(p))
            params.append(p)
            groups.append(gi)
    return params, groups


class StepMetrics:
    """Measures every ``stride``-th optimizer step through the optimizer's step hooks.

    The pre-step hook keeps references to the gradients the optimizer is about to use (after any
    clipping) and the weights before the step; :meth:`finish_step`, called from
    ``probe.step(loss)``, takes the weights after it and the gradient, update and weight norms.
    Measuring at ``probe.step`` rather than in the post-step hook means Δw and ‖w‖ include
    whatever the loop does after ``optimizer.step()`` (a projection onto the sphere, a weight
    clamp). The norms are taken by ``_HostNorms`` for small CPU models and by ``_ForeachNorms``
    otherwise; they stay on the device until the batched flush. ``_HostNorms`` takes the weights
    before a step from the copy made at the previous step's ``probe.step`` when that step was
    measured: so on CPU, Δw is the change between consecutive ``probe.step`` calls, which differs
    from the change over ``optimizer.step()`` only if the loop changes the weights between
    ``probe.step`` and the next ``optimizer.step()`` (then Δw includes that change).

    Args:
        optimizer: the training optimizer.
        stride: measure steps whose index is a multiple of this.
        scale_invariant: one flag per param group; effective LR is logged for flagged groups.
        flush_every: measured steps held on the device before one copy to the host; None:
            ``DEVICE_FLUSH_EVERY``, or ``HOST_FLUSH_EVERY`` for a CPU model's ``_HostNorms``.
        flush_seconds: also copy when this long has passed, so slow steps still show up live.
        norms: makes the norm engine, ``norms(params, group_of, n_groups)``, instead of the two
            above (``probes.fsdp.ShardedNorms`` for sharded parameters).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        stride: int = 1,
        scale_invariant: Sequence[bool] | None = None,
        flush_every: int | None = None,
        flush_seconds: float = 1.0,
        norms: Any = None,
    ) -> None:
        self.optimizer = optimizer
        self.stride = max(1, int(stride))
        self.flush_every = None if flush_every is None else max(1, int(flush_every))
        self.flush_seconds = flush_seconds
        self._make_norms = norms
        self.params, self.group_of = trained_parameters(optimizer)
        n_groups = len(optimizer.param_groups)
        self.scale_invariant = list(scale_invariant) if scale_invariant is not None else [False] * n_groups
        self.steps_taken = 0  # optimizer steps begun (the pre-step hook counts them)
        self._n_groups = n_groups
        self._norms: _HostNorms | _ForeachNorms | None = None  # made at the first measured step
        self._current: _Current | None = None  # pre-hook ran, probe.step not yet
        self._done: list[_Done] = []  # measured, waiting for the host copy
        self._finished = -2  # the last step measured to the end (its weights after are copied)
        self._last_flush = time.perf_counter()
        self._flush_at = self.flush_every or DEVICE_FLUSH_EVERY  # set with the norm engine

    # -- hooks (the training thread) ---------------------------------------------------------
    # Per measured step this costs the norm engine's one call (``_HostNorms``; a few kernels for
    # ``_ForeachNorms``) and a few list operations: right after a training step every call runs
    # from cold caches, so each one left out counts. Everything else waits for the batched flush.

    def before_step(self) -> list[dict[str, Any]]:
        """Optimizer pre-step hook. Returns ``step`` events when a batch reached the host."""
        out: list[dict[str, Any]] = self.finish_step(None) if self._current is not None else []
        # (probe.step() was not called after the previous optimizer step: it is finished now,
        # while the weights are still those that step produced, without a loss.)
        step = self.steps_taken
        self.steps_taken = step + 1  # counted here: a post-step hook would cost a Python call per step
        if step % self.stride:
            return out
        groups = self.optimizer.param_groups
        if len(groups) != self._n_groups:  # add_param_group was called
            out = out + self.flush()  # rows measured with the old layout
            self._rebuild()
        norms = self._norms
        if norms is None:
            norms = self._norms = self._norm_engine()
            self._flush_at = min(self.flush_every or norms.flush_every, norms.capacity)
        # The gradients the optimizer is about to use (after any clipping). Their norms are taken
        # with the others in finish_step: torch optimizers never write to .grad.
        slot = len(self._done)
        if norms.__class__ is _HostNorms and self._finished == step - 1 and (slot or norms.carry_valid):
            # Its common case inline (two method calls fewer): the weights before this step are
            # those the previous step's copy holds, and the gradients are taken as they are.
            norms.linked[slot] = True
            self._current = (step, slot, list(map(_LR, groups)), list(map(_GRAD, self.params)))
            return out
        norms.before(slot, self._finished == step - 1)
        self._current = (step, slot, list(map(_LR, groups)), norms.gradients(self.params))
        return out

    def finish_step(self, loss: Any, now: float | None = None) -> list[dict[str, Any]]:
        """Called by ``probe.step(loss)``: completes the measured step, if any.

        ``now``: ``time.perf_counter()`` at the call (the probe has read it already); the step
        event's Unix time is made from it at the flush."""
        current = self._current
        if current is None:
            return []
        self._current = None
        step, slot, lrs, grads = current
        if now is None:
            now = time.perf_counter()
        if _is_grad_enabled():
            _set_grad_enabled(False)  # .grad made with create_graph=True must not grow a graph
            try:
                measured, kept = self._norms.measure(grads, slot, loss)
            finally:
                _set_grad_enabled(True)
        else:
            measured, kept = self._norms.measure(grads, slot, loss)
        done = self._done
        done.append((step, lrs, measured, kept, now))
        self._finished = step
        if len(done) >= self._flush_at or now - self._last_flush >= self.flush_seconds:
            return self.flush()
        return []

    # -- host side ---------------------------------------------------------------------------

    def flush(self) -> list[dict[str, Any]]:
        """Copy every measured step to the host (one device sync) and return their ``step`` events."""
        done, self._done = self._done, []
        self._last_flush = now = time.perf_counter()
        if not done:
            return []
        with torch.no_grad():
            # One copy for the whole batch; the arithmetic is numpy on the host.
            norms, losses = self._norms.to_host([d[2] for d in done], [d[3] for d in done])
        unix = time.time() - now  # perf_counter -> Unix time, for the whole batch
        grad_norm, update_norm, weight_norm = norms[:, 0].tolist(), norms[:, 1].tolist(), norms[:, 2].tolist()
        invariant = [gi for gi, flag in enumerate(self.scale_invariant) if flag]
        group_sq_list = np.square(norms[:, 3:]).tolist() if invariant else None
        events = []
        for (step, lrs, _, _, at), loss, gn, un, wn, i in zip(done, losses, grad_norm, update_norm, weight_norm, range(len(done))):
            for lr in lrs:
                if lr.__class__ is not float:  # an int, or a tensor LR (capturable Adam): convert them all
                    lrs = [_as_float(v) for v in lrs]
                    break
            eff: list[float | None] = [None] * len(lrs)
            if group_sq_list is not None:
                for gi in invariant:
                    if gi < len(lrs):
                        w2 = group_sq_list[i][gi]
                        eff[gi] = lrs[gi] / w2 if w2 > 0 else math.inf
            events.append({
                "kind": "step", "step": step, "time": unix + at, "loss": loss, "grad_norm": gn,
                "update_norm": un, "weight_norm": wn, "lr": lrs, "effective_lr": eff,
            })
        return events

    def _norm_engine(self) -> Any:
        if self._make_norms is not None:
            return self._make_norms(self.params, self.group_of, self._n_groups)
        if _HostNorms.fits(self.params):
            invariant = [gi for gi, flag in enumerate(self.scale_invariant) if flag]
            return _HostNorms(self.params, self.group_of, self._n_groups, invariant, self.flush_every or HOST_FLUSH_EVERY)
        return _ForeachNorms(self.params, self.group_of, self._n_groups)

    def _rebuild(self) -> None:
        self.params, self.group_of = trained_parameters(self.optimizer)
        self._norms = None
        self._finished = -2  # a new engine has no copy of the weights after it
        n_groups = self._n_groups = len(self.optimizer.param_groups)
        self.scale_invariant = (self.scale_invariant + [False] * n_groups)[:n_groups]


_GRAD = attrgetter("grad")
_LR = itemgetter("lr")
_is_grad_enabled = torch.is_grad_enabled
#: Grad mode switched without building a context object (half the cost of torch.set_grad_enabled).
_set_grad_enabled = getattr(torch._C, "_set_grad_enabled", torch.set_grad_enabled)


def _losses_to_host(losses: list[Any]) -> list[float | None]:
    """Loss tensors to floats with one copy; plain numbers and None pass through."""
    out: list[Any] = list(losses)
    at = [i for i, v in enumerate(losses) if isinstance(v, torch.Tensor)]
    if at:
        try:
            values = torch.stack([losses[i] for i in at]).to("cpu", torch.float64).reshape(len(at)).tolist()
        except (RuntimeError, ValueError):  # losses on several devices, or not scalars
            values = [float(losses[i].reshape(-1)[0]) for i in at]
        for i, v in zip(at, values):
            out[i] = v
    return [None if v is None else float(v) for v in out]


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu())  # a tensor LR (capturable Adam) is rare; one read is fine
    return float(value)
