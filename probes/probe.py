"""The ``Probe``: two lines in a training loop that log its health to a run directory."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lrtui.runlog import RunWriter
from lrtui.runlog.format import KIND_RESUME, RESERVED_FIELDS
from probes.amp import SkippedSteps, in_full_precision
from probes.attention import with_math_attention
from probes.budget import OverheadBudget, StrideGovernor
from probes.control import Control, autopilot_actions, autopilot_flush_every, make_control
from probes.compiled import NOTICE as COMPILED_NOTICE, is_compiled, run_eagerly
from probes.distributed import rank_and_world_size, unwrap_module
from probes.faults import Faults
from probes.fsdp import ShardedRun
from probes.meta import run_meta
from probes import shutdown
from probes.optimizers import after_closure, torch_optimizer, unwrap_optimizer
from probes.run_dir import Claim, NotClaimed, claim_run_dir, say
from probes.run_state import untouched_run
from probes.scale_invariance import detect_scale_invariance
from probes.sharpness_meter import SharpnessMeter
from probes.sharpness_schedule import SharpnessSchedule
from probes.step_metrics import StepMetrics, trained_parameters
from probes.system_stats import SystemStats, nvml_index

#: Seconds between ``overhead`` events.
OVERHEAD_EVERY = 5.0
#: The optimizer pre-step hook is timed on every this many-th step (see ``_before_optimizer_step``).
PRE_HOOK_SAMPLE = 8
#: Seconds between looks at the per-step metrics' share of wall time (see ``StrideGovernor``).
GOVERN_EVERY = 0.1
#: Longest a measured step waits on the device before its event goes to the writer (the training
#: loop's own flush, or the writer thread's when the loop stalls): with the writer's 0.15 s the
#: format's promise of 0.5 s from ``probe.step`` to the file holds with room for a loaded machine.
STEP_FLUSH_SECONDS = 0.15


class Probe:
    """Measures a training run from inside it and appends what it sees to a run directory.

    Example:
        >>> probe = Probe(model, optimizer, "runs/my-run", loss_fn=criterion,
        ...               hessian_batch=(inputs, targets))        # doctest: +SKIP
        >>> for inputs, targets in loader:                        # doctest: +SKIP
        ...     loss = criterion(model(inputs), targets)
        ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
        ...     probe.step(loss)
        >>> probe.close()                                         # doctest: +SKIP

    Args:
        model: the model being trained (a DDP/DataParallel/compiled wrapper is fine).
        optimizer: its optimizer; the probe registers step hooks on it (on the torch optimizer
            inside a wrapper such as Accelerate's or Lightning's: see ``probes.optimizers``).
        run_dir: the run directory to create (rank 0 only under torch.distributed). One that
            already holds a run, or that a live process writes, is left alone: the run goes to
            the next free sibling ``<name>-2``, ``<name>-3``, ... (``probe.run_dir`` says which;
            one line on stderr). See ``probes.run_dir``.
        resume: continue the run in ``run_dir`` (a restart from a checkpoint): the same
            ``run_id``, a ``resume`` event, and steps logged again replace the earlier ones in
            every reader. A directory with no run in it simply starts one.
        start_step: the run's step number of the first optimizer step from here (default:
            resuming, the last logged step + 1; else 0). Under DDP pass it on every rank when
            resuming with ``control``, so that every rank numbers steps alike.
        loss_fn: ``loss_fn(model(inputs), targets)`` on ``hessian_batch`` gives the loss whose
            sharpness is measured.
        hessian_batch: ``(inputs, targets)``, a fixed batch for sharpness and activation sparsity.
        hessian_loss: instead of the two above: a callable without arguments returning the scalar
            loss on a fixed batch (it must call the unwrapped model, never a DDP wrapper).
        name: display name (default: the directory name).
        stride: measure every ``stride``-th optimizer step (at least; see ``adaptive_stride``).
        sharpness_budget: the fraction of wall time the probe may spend in all (default 0.05);
            sharpness estimates are scheduled to stay under it, except the first, which is taken
            at the first optimizer step and paid back (see ``probes.sharpness_schedule``). 0 turns sharpness off (and
            the per-step metrics are never thinned).
        adaptive_stride: when the per-step metrics alone take more than half the budget, measure
            every 2nd, 4th, ... step instead (up to 64 times ``stride``; back down when they are
            cheap again), so the rest is left for sharpness. False keeps ``stride`` whatever it costs.
        tolerance: relative error every logged eigenvalue estimate is within: it stops when its
            residual ‖Hx−θx‖ is at most a quarter of it (see docs/sharpness.md).
        max_iters: most Hessian-vector products per eigenvalue estimate in one measurement; one
            that needs more continues at the next (nothing is logged until it converges).
        scale_invariant: ``None`` detects scale-invariant param groups on the hessian batch;
            a bool (all groups) or a list of bools (one per group) declares them.
        extra: stored as ``meta.json`` "extra".
        system_stats: sample process CPU/RSS and the model's GPU once a second in a thread; a
            ``lrtui.system.SystemSampler`` instance may be passed to use it.
        gpu: NVML index of the GPU to report (default: the one the model is on; none on CPU).
        flush_every: measured steps kept on the device before one copy to the host (default: 32,
            or 128 for a CPU model whose norms are taken from copies; see ``probes.step_metrics``).
        control: accept commands (``lrtui apply``, the app) through the run directory: set or
            drop the LR, start weight averaging. Off by default: then nothing the probe reads
            can change the run. See docs/control.md.
        autopilot: act on the advisor's own ``drop_lr`` and ``start_averaging`` (True), or on
            the one named (``"drop_lr"``); implies ``control``.
        scheduler: the LR scheduler, so that an LR change rescales what it computes from
            (default: the one found on the optimizer at the first change).
        averaging: ``"swa"`` or ``"ema"``: what ``start_averaging`` makes (``probe.averaged_model``).
        save_averaged: write the averaged weights to ``averaged_model.pt`` in the run directory
            on close.
        scaler: the run's ``torch.amp.GradScaler``: the steps it skips (inf/NaN gradients) are
            logged as ``"skipped": true`` step events (see ``probes.amp``; a fused optimizer's
            skips are seen without it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        run_dir: str | os.PathLike[str],
        *,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        hessian_batch: tuple[Any, Any] | None = None,
        hessian_loss: Callable[[], torch.Tensor] | None = None,
        name: str | None = None,
        stride: int = 1,
        sharpness_budget: float = 0.05,
        tolerance: float = 1e-3,
        max_iters: int = 20,
        scale_invariant: bool | Sequence[bool] | None = None,
        extra: dict[str, Any] | None = None,
        system_stats: Any = True,
        gpu: int | None = None,
        flush_every: int | None = None,
        adaptive_stride: bool = True,
        control: bool = False,
        autopilot: bool | str | Sequence[str] = False,
        scheduler: Any = None,
        averaging: str = "swa",
        save_averaged: bool = False,
        scaler: Any = None,
        resume: bool = False,
        start_step: int | None = None,
    ) -> None:
        if start_step is not None and (isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0):
            raise ValueError(f"start_step must be an integer >= 0, not {start_step!r}")
        started = time.perf_counter()
        self._wall_start = started
        self._probe_seconds = 0.0
        self._step_seconds = 0.0  # the part of it spent in the per-step metrics
        self._govern_at = started
        self._last_overhead = started
        self.model = model
        self.module = unwrap_module(model)
        self.optimizer = optimizer = unwrap_optimizer(optimizer)  # the torch one in Accelerate's, Lightning's wrapper
        self.run_dir = Path(os.fsdecode(run_dir))
        self.resume = bool(resume)
        self.claim: Claim | None = None
        #: The run's step number of this process's first optimizer step (a resumed run's K).
        self.step_offset = int(start_step or 0)
        self._start_step_arg = start_step
        self._step_lock = threading.Lock()  # the training thread and the writer thread's hand-over
        self._log_dead = False
        self._training_thread = threading.current_thread()
        self._unobserved: list[dict[str, Any]] = []
        self.rank, self.world_size = rank_and_world_size()
        self.writer: RunWriter | None = None
        self.faults = Faults(self._write_warning)
        self.steps: StepMetrics | None = None
        self.amp = SkippedSteps(optimizer, scaler)
        self.sharpness: SharpnessMeter | None = None
        self.system: SystemStats | None = None
        self.budget = OverheadBudget(sharpness_budget)
        self.schedule = SharpnessSchedule(self.budget)  # the early estimate, then the budget
        # FSDP: every rank measures its shard at the same steps, so the stride must not adapt per rank.
        self.sharded = ShardedRun.attach(model, optimizer, self.world_size)
        if self.sharded is not None and self.sharded.measures:
            adaptive_stride = False
        self.governor = StrideGovernor(sharpness_budget, stride, adaptive_stride)
        self._hooks: list[Any] = []
        self._closed = False
        self._early_warnings: list[tuple[str, str]] = []
        self._last_checked_step = -1
        acting = autopilot_actions(autopilot)
        flush_every = autopilot_flush_every(acting, stride, flush_every)
        self.settings = {
            "stride": int(stride),
            "sharpness_budget": float(sharpness_budget),
            "tolerance": float(tolerance),
            "max_iters": int(max_iters),
            "flush_every": None if flush_every is None else int(flush_every),
            "adaptive_stride": bool(adaptive_stride),
        }
        # On every rank: under DDP each applies what rank 0 decides.
        self.control: Control | None = make_control(
            self.module, optimizer, self.rank, self.world_size, self.faults, wanted=bool(control or acting),
            autopilot=acting, scheduler=scheduler, averaging=averaging, save_averaged=save_averaged)
        if self.control is not None:
            self.settings.update(self.control.settings)
        if self.rank != 0:
            if self.control is not None:
                self.control._offset = self.step_offset  # rank 0's attach sets it there
            if self.sharded is not None and self.sharded.measures:
                self._measure_shard()  # FSDP: every rank's shard is part of the norms
            return  # only rank 0 writes; the other ranks cost nothing
        flags = self._declared_scale_invariance(scale_invariant, len(optimizer.param_groups))
        try:
            self._start(
                loss_fn, hessian_batch, hessian_loss, name, flags, extra, system_stats, gpu,
            )
        except Exception as exc:  # the probe must never stop a training run from starting
            self.faults.fail("probe", exc)  # measuring stops; the log stays open for the end record
            self._remove_hooks()
            if self.system is not None:
                self.system.close()
            self.steps, self.sharpness, self.system = None, None, None
        self._probe_seconds += time.perf_counter() - started

    def _start(
        self,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        hessian_batch: tuple[Any, Any] | None,
        hessian_loss: Callable[[], torch.Tensor] | None,
        name: str | None,
        flags: list[bool] | None,
        extra: dict[str, Any] | None,
        system_stats: Any,
        gpu: int | None,
    ) -> None:
        """Rank 0's set-up: closures, scale invariance, meta, writer, hooks, sharpness, system thread."""
        optimizer = self.optimizer = torch_optimizer(self.optimizer)  # none found: the probe says so, once
        first = next(iter(self.module.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        try:
            loss, outputs = self._hessian_closures(loss_fn, hessian_batch, hessian_loss)
        except Exception as exc:
            self.faults.fail("sharpness", exc)
            loss = outputs = None
        n_groups = len(optimizer.param_groups)
        self.settings["scale_invariant"] = "declared" if flags is not None else "detected"
        if self.sharded is not None and self.world_size > 1 and loss is not None:
            # Its forward gathers the shards from every rank; rank 0 alone would wait forever.
            self.faults.fail("sharpness", "FSDP: the forward pass of a sharded model needs every rank")
            loss = outputs = None
        if flags is None:
            flags = self._detect_scale_invariance(outputs) if outputs is not None else [False] * n_groups
        try:
            claim = self.claim = claim_run_dir(self.run_dir, resume=self.resume, start_step=self._start_step_arg)
        except NotClaimed as exc:
            self.faults.fail("log", str(exc))
            return
        self.run_dir, self.step_offset = claim.path, claim.start_step
        if claim.note:
            say(claim.note)
        meta = run_meta(
            self.model,
            optimizer,
            name=name or self.run_dir.name,
            world_size=self.world_size,
            scale_invariant=flags,
            probe_settings=self.settings,
            extra=extra,
        )
        if claim.resumed and claim.meta is not None:
            resumed = {"t": time.time(), "pid": os.getpid(), "host": socket.gethostname(), "step": claim.start_step}
            earlier = claim.meta.get("resumed")
            meta = {**claim.meta, "resumed": [*(earlier if isinstance(earlier, list) else []), resumed]}
        self.writer = RunWriter(self.run_dir, meta, on_error=self._log_failed, before_write=self._hand_over)
        if not self.writer.ok:
            claim.release()
            return  # already reported once; measuring for a dead log would only cost time
        if claim.resumed:
            self.writer.write(KIND_RESUME, claim.start_step, t=resumed["t"], pid=resumed["pid"], host=resumed["host"])
        shutdown.register(self)
        self.steps = StepMetrics(optimizer, stride=self.settings["stride"], scale_invariant=flags, flush_every=self.settings["flush_every"],
                                 flush_seconds=STEP_FLUSH_SECONDS, norms=self.sharded.engine if self.sharded is not None else None)
        self._hooks = [optimizer.register_step_pre_hook(self._before_optimizer_step)]
        if self.control is not None:
            self.control.attach(self.writer, meta, self.steps, self.run_dir, step_offset=self.step_offset)
        if self.sharded is not None and self.sharded.refusal():
            self.faults.fail("grad_norm", self.sharded.refusal())
        for source, message in self._early_warnings:
            self._write_warning(source, message)
        if loss is not None and self.budget.fraction > 0:
            if any(isinstance(m, torch.nn.SyncBatchNorm) for m in self.module.modules()) and self.world_size > 1:
                # Its forward all-reduces across ranks; on rank 0 alone that would hang.
                self.faults.fail("sharpness", "SyncBatchNorm needs every rank in its forward pass")
            else:
                params, _ = trained_parameters(optimizer)
                self.sharpness = SharpnessMeter(
                    self.module,
                    params,
                    loss,
                    optimizer,
                    self.device,
                    tolerance=self.settings["tolerance"],
                    max_iters=self.settings["max_iters"],
                )
                if is_compiled(self.model):
                    self.faults.fail("compile", COMPILED_NOTICE, disables=False)
        if system_stats:
            self.system = SystemStats(
                self.writer.write,
                self._last_step_index,
                self.faults.fail,
                gpu=gpu if gpu is not None else nvml_index(self.device),
                sampler=None if system_stats is True else system_stats,
            )

    # -- the public API ----------------------------------------------------------------------

    def step(self, loss: torch.Tensor | float | None = None) -> None:
        """Record the loss of the optimizer step just taken (call it after ``optimizer.step()``)."""
        if self.steps is None or self._closed:
            return
        if self._log_dead:
            self._stop_measuring()
            return
        started = time.perf_counter()
        if self.faults.ok("step"):
            try:
                with self._step_lock:
                    records = self.amp.at_probe_step(self.steps, loss)
                    if records is None:
                        records = self.steps.finish_step(loss, started)
                    if records:
                        self._write_steps(records)
            except Exception as exc:
                self.faults.fail("step", exc)
        spent = time.perf_counter() - started
        self._probe_seconds += spent
        self._step_seconds += spent
        if started >= self._govern_at:
            try:
                self._govern(started)
            except Exception as exc:  # keep the stride it has; never stop the training
                self._govern_at = math.inf
                self.faults.fail("stride", exc)
        if self.sharpness is not None:
            self._maybe_measure_sharpness()
        if started - self._last_overhead >= OVERHEAD_EVERY:
            self._write_overhead(started)

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record user metrics (test accuracy, eval loss, a phase name) as a ``metric`` event.

        Args:
            step: the optimizer step they belong to (default: the last step taken).
            **metrics: numbers (tensors are read once) or strings.
        """
        if self.writer is None or self._closed:
            return
        try:
            fields: dict[str, Any] = {}
            for key, value in metrics.items():
                if key in RESERVED_FIELDS:
                    raise ValueError(f"metric name {key!r} is reserved")
                if isinstance(value, torch.Tensor):
                    value = value.detach().reshape(-1)[0].item() if value.numel() else math.nan
                fields[key] = value
            if step is None:
                last = self._last_step_index()
                step = last if last is not None else self.step_offset
            self.writer.write("metric", int(step), **fields)
            if self.control is not None:
                self.control.observe_metric(int(step), fields)
        except Exception as exc:
            self.faults.fail("metric", exc)

    def close(self, status: str = "finished", exception: BaseException | None = None, **fields: Any) -> None:
        """Write what is still buffered and the end record; remove the hooks. Safe to call twice.

        ``status``: ``finished``, ``failed`` (with ``exception``) or ``terminated`` (with
        ``signal="SIGTERM"``); the probe itself closes with these on an uncaught exception, at
        interpreter exit and on SIGTERM/SIGINT (``probes.shutdown``)."""
        if self._closed:
            return
        self._closed = True
        shutdown.unregister(self)
        self._remove_hooks()
        if self.system is not None:
            self.system.close()
        if self.writer is None:
            if self.control is not None:
                self.control.close()
            if self.claim is not None:
                self.claim.release()
            return
        # A signal handler's close runs in a thread of its own and may find the lock held by the
        # training thread it interrupted: then the steps still on the device are not waited for.
        locked = self._step_lock.acquire(timeout=2.0)
        try:
            if locked and self.steps is not None and self.faults.ok("step"):
                if self.sharded is not None:
                    self.sharded.close()
                try:
                    records = self.steps.finish_step(None) if self.steps._current is not None else []
                    self._write_steps(records + self.steps.flush(), final=True)
                except Exception as exc:
                    self.faults.fail("step", exc)
        finally:
            if locked:
                self._step_lock.release()
        if self.control is not None:
            self.control.close()
        self._write_overhead(time.perf_counter())
        self.writer.close(status, exception, **fields)
        if self.claim is not None:
            self.claim.release()

    def flush(self, timeout: float = 5.0) -> bool:
        """Hand every measured step to the writer and wait until it is on disk; False on timeout.

        Safe from a signal handler: what the interrupted thread holds is not waited for."""
        if self.writer is None or self._closed:
            return False
        self._hand_over(force=True)
        return self.writer.flush_if_free(timeout)

    @property
    def averaged_model(self) -> torch.optim.swa_utils.AveragedModel | None:
        """The weight average ``start_averaging`` began (None before): evaluate this one. With
        BatchNorm, run ``torch.optim.swa_utils.update_bn(loader, probe.averaged_model)`` first."""
        return self.control.averaged_model if self.control is not None else None

    @property
    def actions(self) -> list[dict[str, Any]]:
        """The actions applied so far, as their ``action`` events (empty without control)."""
        return list(self.control.actions) if self.control is not None else []
    def _measure_shard(self) -> None:
        """A rank other than 0 under FSDP: the step hooks and norms, for the sums; it writes nothing."""
        try:
            self.steps = StepMetrics(self.optimizer, stride=self.settings["stride"], flush_every=self.settings["flush_every"],
                                     norms=self.sharded.engine)
            self._hooks = [self.optimizer.register_step_pre_hook(self._before_optimizer_step)]
        except Exception as exc:
            self.faults.fail("probe", exc)
            self.steps = None

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt):
            self.close("terminated", signal="SIGINT")
        else:
            self.close("failed" if exc is not None else "finished", exc)

    # -- optimizer hooks -----------------------------------------------------------------------

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        if len(args) > 1 or kwargs:  # step(closure): this step's gradients exist once the closure ran
            deferred = after_closure(args, kwargs, lambda: self._before_optimizer_step(optimizer, (), {}))
            if deferred is not None:
                return deferred
        if self._log_dead or not self.faults.ok("step"):
            return None
        steps = self.steps
        if steps is None:
            return None
        # The hook's cost hardly varies from step to step: it is timed on every PRE_HOOK_SAMPLE-th
        # one and counted that many times (two clock reads per step saved; a step's events are
        # written here only when probe.step was not called, and those are timed as well).
        timed = not steps.steps_taken % PRE_HOOK_SAMPLE
        started = time.perf_counter() if timed else 0.0
        records = None
        try:
            with self._step_lock:
                records = steps.before_step()
                self.amp.before_step(optimizer, steps.steps_taken - 1)
                if records:
                    if not timed:
                        timed, started = True, time.perf_counter()  # what before_step took is not in it
                    self._write_steps(records)
        except Exception as exc:
            self.faults.fail("step", exc)
        if timed:
            spent = time.perf_counter() - started
            if not records:
                spent *= PRE_HOOK_SAMPLE
            self._probe_seconds += spent
            self._step_seconds += spent
        return None

    def _govern(self, now: float) -> None:
        """Thin the per-step metrics, or stop thinning them, as ``StrideGovernor`` says."""
        self._govern_at = now + GOVERN_EVERY
        stride = self.governor.update(now, self._step_seconds, self.steps.steps_taken)
        if stride is None:
            return
        previous, self.steps.stride = self.steps.stride, stride
        share, budget = self.governor.share, self.budget.fraction
        if stride > previous:
            message = (
                f"the per-step metrics took {100 * share:.1f}% of wall time, over half of sharpness_budget={budget:g}: "
                f"measuring every {stride} steps from step {self.steps.steps_taken} (adaptive_stride=False keeps every {self.governor.base})"
            )
        else:
            message = f"the per-step metrics took {100 * share:.1f}% of wall time: measuring every {stride} steps from step {self.steps.steps_taken}"
        if self.faults.ok("stride"):
            self.faults.fail("stride", message, disables=False)  # said once on stderr, and logged
        else:
            self._write_warning("stride", message)  # later changes: in the log only

    # -- sharpness ---------------------------------------------------------------------------

    def _hessian_closures(
        self,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        hessian_batch: tuple[Any, Any] | None,
        hessian_loss: Callable[[], torch.Tensor] | None,
    ) -> tuple[Callable[[], torch.Tensor] | None, Callable[[], torch.Tensor] | None]:
        """(loss on the fixed batch, outputs on it for scale-invariance detection), or Nones."""
        if hessian_loss is not None:
            # Autocast off (sharpness in the parameters' dtype); for double backward, compiled code
            # run eagerly and attention on its math kernel.
            loss_only = in_full_precision(with_math_attention(run_eagerly(hessian_loss)))
            return loss_only, loss_only
        if loss_fn is None or hessian_batch is None:
            return None, None
        inputs, targets = hessian_batch
        inputs, targets = _to_device(inputs, self.device), _to_device(targets, self.device)
        module = self.module  # the unwrapped model: calling it runs no DDP collective

        def loss() -> torch.Tensor:
            return loss_fn(module(inputs), targets)

        def outputs() -> torch.Tensor:
            out = module(inputs)
            return out if isinstance(out, torch.Tensor) else loss_fn(out, targets)

        return (in_full_precision(with_math_attention(run_eagerly(loss))),
                in_full_precision(with_math_attention(run_eagerly(outputs))))

    def _detect_scale_invariance(self, outputs: Callable[[], torch.Tensor]) -> list[bool]:
        n_groups = len(self.optimizer.param_groups)
        try:
            with untouched_run(self.module, self.device) as reseed:

                def evaluate() -> torch.Tensor:
                    reseed()  # the same dropout mask for the plain and the scaled pass
                    return outputs()

                return detect_scale_invariance(evaluate, self.optimizer)
        except Exception as exc:
            self.faults.fail("scale_invariance", exc)
            return [False] * n_groups

    def _maybe_measure_sharpness(self) -> None:
        step = self._last_step_index()
        if step is None or step == self._last_checked_step or (step - self.step_offset) % self.settings["stride"]:
            return
        self._last_checked_step = step
        if not self.faults.ok("sharpness") or (self.writer is not None and not self.writer.ok):
            return
        now = time.perf_counter()
        steps = self.steps.steps_taken
        slot = self.schedule.slot(steps, self._probe_seconds, now - self._wall_start)
        if slot is None:
            message = self.schedule.starved(steps, self._step_seconds, now - self._wall_start)
            if message is not None:  # not a fault, but the user should know why no sharpness shows up
                self.faults.fail("budget", message, disables=False)
            return
        try:
            result = self.sharpness.measure(lambda method, exc: self.faults.fail(method, exc), out_of_time=slot.out_of_time)
        except Exception as exc:
            self.faults.fail("sharpness", exc)
            self.sharpness = None
            self._probe_seconds += time.perf_counter() - now
            return
        for fields in result.sharpness:
            self.writer.write("sharpness", step, **fields)
        if result.layers:
            self.writer.write("activations", step, layers=result.layers, zero_fraction=result.zero_fraction)
        spent = time.perf_counter() - now
        self.schedule.measured(steps, spent, bool(result.pending))
        self._probe_seconds += spent

    # -- writing -------------------------------------------------------------------------------

    def _write_steps(self, events: list[dict[str, Any]], final: bool = False) -> None:
        if self.writer is None:  # a rank other than 0 of an FSDP run: it measured its shard for the sums
            self.amp.forget()
            return
        if self.sharded is not None:
            events = self.sharded.finish(events)
        events = self.amp.mark(events, final)
        offset = self.step_offset
        for event in events:
            if offset:
                event["step"] += offset
            self.writer.write_event(event)
        if self.control is not None:
            if threading.current_thread() is self._training_thread:
                self.control.observe(self._unobserved + events if self._unobserved else events)
                self._unobserved = []
            else:  # the writer thread's hand-over: the autopilot hears of them in the training thread
                self._unobserved += events

    def _write_overhead(self, now: float) -> None:
        self._last_overhead = now
        wall = now - self._wall_start
        if self.writer is None or wall <= 0:
            return
        self.writer.write(
            "overhead",
            self._last_step_index(),
            fraction=self._probe_seconds / wall,
            probe_seconds=self._probe_seconds,
            wall_seconds=wall,
            budget=self.settings["sharpness_budget"],
            stride=self.steps.stride if self.steps is not None else self.settings["stride"],
        )

    def _write_warning(self, source: str, message: str) -> None:
        if source in ("probe", "step", "log") and self.sharded is not None:
            self.sharded.leave()  # it measures no more: the other ranks must not wait for its sums
        if self.writer is None:
            self._early_warnings.append((source, message))
        else:
            self.writer.write("warning", self._last_step_index(), source=source, message=message)

    def _log_failed(self, message: str) -> None:
        if "; logging disabled" in message:
            self._log_dead = True  # the training thread stops measuring at its next step
        self.faults.fail("log", message.split("; logging disabled")[0])

    def _stop_measuring(self) -> None:
        """The log is gone (deleted, full, refused): measure nothing more for it."""
        self._remove_hooks()
        if self.system is not None:
            self.system.close()
        self.steps, self.sharpness, self.system = None, None, None

    def _hand_over(self, force: bool = False) -> None:
        """The writer thread, on each wake: steps measured but held on the device (a training
        loop that stalled after them, in an evaluation or a hung collective) go to the writer
        once they waited ``STEP_FLUSH_SECONDS``. Never under FSDP (its flush waits on every rank)
        and never while the training thread is inside the probe."""
        steps = self.steps
        if steps is None or self._closed or self.sharded is not None or not steps._done:
            return
        if not force and time.perf_counter() - steps._last_flush < STEP_FLUSH_SECONDS:
            return
        if not self._step_lock.acquire(blocking=False):
            return
        try:
            if steps._current is None and steps._done and self.faults.ok("step"):
                self._write_steps(steps.flush())
        except Exception as exc:
            self.faults.fail("step", exc)
        finally:
            self._step_lock.release()

    def _last_step_index(self) -> int | None:
        if self.steps is None or not self.steps.steps_taken:
            return None
        return self.steps.steps_taken - 1 + self.step_offset

    @staticmethod
    def _declared_scale_invariance(value: bool | Sequence[bool] | None, n_groups: int) -> list[bool] | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return [value] * n_groups
        flags = [bool(v) for v in value]
        if len(flags) != n_groups:
            raise ValueError(f"scale_invariant has {len(flags)} flags for {n_groups} param groups")
        return flags


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside tuples, lists, dicts) moved to the model's device once."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
