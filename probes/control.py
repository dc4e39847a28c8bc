"""Acting on the advice, where the user opted in: commands from the run directory and the autopilot.

``Probe(..., control=True)`` makes a ``Control``: an optimizer pre-step hook that, between two
optimizer steps, applies what was asked: ``set_lr``, ``drop_lr`` (scheduler-aware, see
``probes.lr_rescale``) or ``start_averaging`` (``probes.averaging``). Commands come as files
(``lrtui.control`` is the protocol, ``probes.command_inbox`` reads them safely); with
``autopilot=True`` the advisor itself decides (``probes.autopilot``). Under torch.distributed
rank 0 decides and every rank applies at the same step (``probes.control_sync``). Every applied
action is an ``action`` event, every refusal a ``warning`` with the reason. A fault anywhere in
here turns control off and is reported once; it never reaches the training.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Sequence

import torch

from lrtui.advisor import Recommendation
from lrtui.control import (
    AVERAGING_MODES,
    DROP_FACTOR,
    FACTOR_MAX,
    FACTOR_MIN,
    WARNING_SOURCE,
    Command,
    describe_lrs,
    size_averaging,
)
from lrtui.runlog.format import KIND_ACTION
from probes.autopilot import AUTOPILOT_ACTIONS, MARGIN_STEPS, Autopilot
from probes.averaging import WeightAveraging
from probes.command_inbox import MAX_PER_LOOK, CommandInbox
from probes.control_sync import MAX_ORDERS, SYNC_EVERY, ControlSync, Order
from probes.faults import Faults
from probes.lr_rescale import (
    LRChange,
    RescaleError,
    apply_change,
    find_scheduler,
    lr_of,
    plan_change,
    scheduler_name,
)
from probes.step_metrics import HOST_FLUSH_EVERY

#: Seconds between looks into ``control/commands/`` (one directory listing each).
LOOK_EVERY = 0.25


class Refused(Exception):
    """An action that cannot be applied right; the message is the reason."""


def autopilot_actions(value: bool | str | Sequence[str]) -> tuple[str, ...]:
    """``Probe(autopilot=...)`` as the actions it may take: True is both, False none."""
    if value is True:
        return AUTOPILOT_ACTIONS
    if value is False or value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if name not in AUTOPILOT_ACTIONS:
            raise ValueError(f"autopilot action {name!r} is not one of {', '.join(AUTOPILOT_ACTIONS)}")
    return tuple(a for a in AUTOPILOT_ACTIONS if a in names)


def autopilot_flush_every(actions: tuple[str, ...], stride: int, flush_every: int | None) -> int | None:
    """The probe's batch of logged steps under the autopilot: a strided run flushes as often in
    optimizer steps as an unstrided one, so the autopilot's lag (see ``probes.autopilot``) stays
    about ``HOST_FLUSH_EVERY + MARGIN_STEPS`` steps."""
    if not actions or flush_every is not None or stride <= 1:
        return flush_every
    return max(4, HOST_FLUSH_EVERY // stride)


def make_control(module: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int, world_size: int,
                 faults: Faults, *, wanted: bool, autopilot: tuple[str, ...], scheduler: Any, averaging: str,
                 save_averaged: bool) -> Control | None:
    """The probe's ``Control`` when the user asked for one; a bad argument raises ValueError, any
    other failure is reported through ``faults`` and leaves the run without control."""
    if not wanted:
        return None
    if averaging not in AVERAGING_MODES:
        raise ValueError(f"averaging must be one of {', '.join(AVERAGING_MODES)}, not {averaging!r}")
    try:
        return Control(module, optimizer, rank=rank, world_size=world_size, autopilot=autopilot,
                       scheduler=scheduler, averaging=averaging, save_averaged=save_averaged)
    except Exception as exc:  # the probe must never stop a training run from starting
        faults.fail(WARNING_SOURCE, exc)
        return None


class Control:
    """The control path of one probe, on every rank.

    Args:
        module: the trained module (unwrapped).
        optimizer: its optimizer (the pre-step hook goes on it).
        rank, world_size: torch.distributed's (0, 1 outside it).
        autopilot: the actions the autopilot may take (``autopilot_actions``).
        scheduler: the LR scheduler, if the user passed it; else found at the first LR change.
        averaging: ``"swa"`` or ``"ema"``, for ``start_averaging``.
        save_averaged: save the averaged weights into the run directory on close.
    Steps: every rank counts the optimizer steps since the probe was made (the DDP sync schedule
    and the averaging's checkpoints run on that count, the same on every rank); actions and events
    use the run's step numbers: on rank 0 the probe's own index (a step a GradScaler skipped has
    one too) plus the offset it learns in ``attach`` (a resumed run's first step).
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, *, rank: int, world_size: int,
                 autopilot: tuple[str, ...] = (), scheduler: Any = None, averaging: str = "swa",
                 save_averaged: bool = False) -> None:
        if averaging not in AVERAGING_MODES:
            raise ValueError(f"averaging must be one of {', '.join(AVERAGING_MODES)}, not {averaging!r}")
        self.module = module
        self.optimizer = optimizer
        self.rank, self.world_size = rank, world_size
        self.autopilot_actions = autopilot
        self.averaging_mode = averaging
        self.save_averaged = save_averaged
        self.step = 0  # the run's number of the next optimizer step
        self._count = 0  # optimizer steps since the probe was made (every rank alike)
        self._offset = 0
        self.enabled = True
        self.actions: list[dict[str, Any]] = []
        self.averager: WeightAveraging | None = None
        self.autopilot: Autopilot | None = None
        self.inbox: CommandInbox | None = None
        self.writer: Any = None
        self.run_dir: Any = None
        self.faults = Faults(self._warn)
        self._scheduler = scheduler
        self._scheduler_known = scheduler is not None
        self._next_look = math.inf  # rank 0 looks once attached
        self._disabling = False
        self._held: list[float] | None = None  # LRs set with no scheduler known, watched until changed
        self._held_since = 0
        self._last_lr_change = 0
        self._stride_max = 1
        self._steps: Any = None
        self._planned_lrs: list[float] | None = None
        self._rank_fault_said = False
        self._averaging_since = 0
        self.sync = ControlSync(len(optimizer.param_groups)) if world_size > 1 else None
        self._hook = optimizer.register_step_pre_hook(self._before_step)

    @property
    def settings(self) -> dict[str, Any]:
        """The ``meta.json`` ``probe`` fields clients read (``lrtui apply`` checks ``control``)."""
        return {"control": True, "autopilot": list(self.autopilot_actions), "averaging": self.averaging_mode}

    @property
    def averaged_model(self) -> torch.optim.swa_utils.AveragedModel | None:
        return self.averager.model if self.averager is not None else None

    # -- set-up (rank 0) ---------------------------------------------------------------------

    def attach(self, writer: Any, meta: dict[str, Any], steps: Any, run_dir: Any, step_offset: int = 0) -> None:
        """Rank 0, once the run's log is open: open the command folder, start the autopilot.

        ``step_offset``: the run's step number of this process's first optimizer step (a
        resumed run's; 0 otherwise)."""
        self.writer, self._steps, self.run_dir = writer, steps, run_dir
        self._offset = step_offset
        self.step = self._count + step_offset
        self._last_lr_change = self.step
        try:
            self.inbox = CommandInbox(run_dir, meta.get("run_id"))
            self.inbox.open()
            self._next_look = 0.0
        except Exception as exc:
            self.inbox = None
            self._fault(exc)
            return
        if self.autopilot_actions:
            try:
                self.autopilot = Autopilot(meta, self.autopilot_actions, self._lag,
                                           lambda message: self.faults.fail("autopilot", message))
            except Exception as exc:
                self.faults.fail("autopilot", exc)

    def _lag(self) -> int:
        """Steps from a logged step to the one where the autopilot acts on what was decided there."""
        steps = self._steps
        if steps is not None:
            self._stride_max = max(self._stride_max, int(steps.stride))
        flush = getattr(steps, "flush_every", None) or HOST_FLUSH_EVERY
        return self._stride_max * flush + MARGIN_STEPS

    def observe(self, events: list[dict[str, Any]]) -> None:
        """Events the probe just logged (its step batches), for the autopilot."""
        if self.autopilot is not None and self.enabled:
            try:
                self.autopilot.observe(events)
            except Exception as exc:
                self.faults.fail("autopilot", exc)

    def observe_metric(self, step: int, fields: dict[str, Any]) -> None:
        if self.autopilot is not None and self.enabled:
            self.observe([{"kind": "metric", "step": step, "time": time.time(), **fields}])

    # -- the hook ----------------------------------------------------------------------------

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        count = self._count
        self._count = count + 1
        steps = self._steps  # this hook runs before the probe's: steps_taken is this step's index
        step = (steps.steps_taken if steps is not None else count) + self._offset
        self.step = step + 1
        if not self.enabled:
            return
        if self.averager is not None and self.faults.ok("averaging"):
            try:
                self.averager.before_step(count)
            except Exception as exc:  # the average stops where it is; the rest of control goes on
                self.faults.fail("averaging", exc)
        try:
            if self.sync is not None:
                if count % SYNC_EVERY == 0:
                    self._sync(step, count)
            else:
                ap = self.autopilot
                if (ap is not None and (ap.next_due <= step or ap.oldest_due <= step)) or \
                        time.perf_counter() >= self._next_look:
                    for order, record in self._decide(step):
                        self._apply(order, record, step, count)
            if self._held is not None:
                self._check_held(step)
        except Exception as exc:
            self._fault(exc)

    def _sync(self, step: int, count: int) -> None:
        decided: list[tuple[Order, dict[str, Any]]] = []
        disable = self._disabling
        if self.rank == 0 and not disable:
            try:
                decided = self._decide(step)
            except Exception as exc:
                self._report_fault(exc)
                disable, decided = True, []
        try:
            orders, disable = self.sync.exchange(self.rank, [o for o, _ in decided], disable)
        except Exception as exc:  # the collective itself failed: nothing more can be agreed on
            self.enabled = False
            self._report_fault(exc)
            return
        if disable:
            self.enabled = False
            return
        records = [r for _, r in decided] if self.rank == 0 else [{} for _ in orders]
        for order, record in zip(orders, records):
            try:
                self._apply(order, record, step, count)
            except Exception as exc:  # keep taking part in the broadcasts: the others wait on them
                self._report_fault(exc)

    # -- deciding (rank 0) -------------------------------------------------------------------

    def _decide(self, step: int) -> list[tuple[Order, dict[str, Any]]]:
        """What to apply at ``step``: the autopilot's decisions due now, then queued commands."""
        out: list[tuple[Order, dict[str, Any]]] = []
        self._planned_lrs = None  # the LRs after the orders decided so far
        ap = self.autopilot
        if ap is not None:
            for rec in ap.due(step):
                record = {"source": "autopilot", "id": f"autopilot-{rec.action}-{rec.step}",
                          "recommendation_step": rec.step}
                self._resolve_into(out, rec.action, record, step, self._from_recommendation, rec)
        now = time.perf_counter()
        if self.inbox is not None and now >= self._next_look:
            self._next_look = now + LOOK_EVERY
            # Under DDP no more than one broadcast carries: the rest wait, queued, for the next.
            room = MAX_ORDERS - len(out) if self.sync is not None else MAX_PER_LOOK
            for taken in self.inbox.take(room) if room > 0 else []:
                if taken.command is None:
                    self._refuse(taken.id, None, taken.refused or "refused", step)
                    continue
                cmd = taken.command
                record = {"source": cmd.source, "id": cmd.id}
                if cmd.recommendation_step is not None:
                    record["recommendation_step"] = cmd.recommendation_step
                self._resolve_into(out, cmd.action, record, step, self._from_command, cmd)
        return out

    def _resolve_into(self, out: list[tuple[Order, dict[str, Any]]], action: str, record: dict[str, Any],
                      step: int, resolve: Callable[[Any, int], Order], what: Any) -> None:
        try:
            order = resolve(what, step)
        except (Refused, RescaleError) as exc:
            self._refuse(record["id"], action, str(exc), step)
            return
        if order.action == "start_averaging" and any(o.action == "start_averaging" for o, _ in out):
            self._refuse(record["id"], action, "averaging starts once per run (asked twice at this step)", step)
            return
        out.append((order, record))

    def _from_command(self, cmd: Command, step: int) -> Order:
        groups = self.optimizer.param_groups
        if cmd.action == "start_averaging":
            if cmd.averaging is not None:
                every, decay = cmd.averaging.checkpoint_every, cmd.averaging.ema_decay
            else:  # sized as the advisor sizes it: over as long again as the LR has been constant
                sized = size_averaging(step, self._last_lr_change)
                every, decay = sized.checkpoint_every, sized.ema_decay
            return self._averaging_order(every, decay)
        if cmd.action == "set_lr":
            if cmd.factor is not None:
                return self._lr_order(cmd.action, factors=[cmd.factor] * len(groups))
            lrs = list(cmd.lr) if isinstance(cmd.lr, tuple) else [cmd.lr] * len(groups)
            return self._lr_order(cmd.action, new_lrs=lrs)
        # drop_lr: the LR the advisor recommended for group 0, the others by the same factor
        if cmd.lr is not None:
            current = lr_of(groups[0])
            if not current > 0:
                raise Refused(f"param group 0 is at lr {current:g}: cannot drop it to {cmd.lr:g} by a factor")
            return self._lr_order(cmd.action, factors=[float(cmd.lr) / current] * len(groups))  # type: ignore[arg-type]
        return self._lr_order(cmd.action, factors=[cmd.factor or DROP_FACTOR] * len(groups))

    def _from_recommendation(self, rec: Recommendation, step: int) -> Order:
        if rec.action == "start_averaging":
            return self._averaging_order(int(rec.numbers["checkpoint_every"]), float(rec.numbers["ema_decay"]))
        new, current = rec.numbers.get("new_lr"), rec.numbers.get("current_lr")
        factor = new / current if isinstance(new, float) and isinstance(current, float) and current > 0 else DROP_FACTOR
        order = self._lr_order("drop_lr", factors=[factor] * len(self.optimizer.param_groups))
        order.stop_averaging = "start_averaging" in self.autopilot_actions
        return order

    def _averaging_order(self, every: int, decay: float) -> Order:
        if self.averager is not None:
            raise Refused(f"weight averaging already runs (since step {self._averaging_since})")
        return Order("start_averaging", mode=self.averaging_mode, checkpoint_every=max(1, every), ema_decay=decay)

    def _lr_order(self, action: str, *, factors: list[float] | None = None,
                  new_lrs: list[float] | None = None) -> Order:
        current = self._planned_lrs or [lr_of(g) for g in self.optimizer.param_groups]
        change = plan_change(self.optimizer, self.scheduler(), factors=factors, new_lrs=new_lrs, current=current)
        for gi, f in enumerate(change.factors):
            if math.isnan(f) and change.scheduler is None and new_lrs is not None:
                continue  # an absolute LR for a group at 0 now, with no schedule to rescale
            if not FACTOR_MIN <= f <= FACTOR_MAX:
                raise Refused(f"it would change param group {gi}'s lr by x{f:.3g}, outside "
                              f"[{FACTOR_MIN:g}, {FACTOR_MAX:g}]")
        self._planned_lrs = [n if n is not None else c * f for c, f, n in zip(current, change.factors, change.new_lrs)]
        return Order(action, factors=change.factors, new_lrs=change.new_lrs)

    def scheduler(self) -> Any:
        """The LR scheduler: the one passed to the probe, else the one found on the optimizer."""
        if not self._scheduler_known:
            self._scheduler = find_scheduler(self.optimizer)  # RescaleError if ambiguous: asked again
            self._scheduler_known = True
        return self._scheduler

    # -- applying (every rank) ---------------------------------------------------------------

    def _apply(self, order: Order, record: dict[str, Any], step: int, count: int) -> None:
        before = [lr_of(g) for g in self.optimizer.param_groups]
        fields: dict[str, Any] = {"action": order.action, **record}
        if order.action == "start_averaging":
            self.averager = WeightAveraging(self.module, order.mode, order.checkpoint_every, order.ema_decay, count)
            self._averaging_since = step
            fields["averaging"] = self.averager.describe()
            after = before
        else:
            scheduler = self.scheduler()
            change = LRChange(list(order.factors or []), list(order.new_lrs or []), scheduler)
            after = apply_change(self.optimizer, change)
            self._last_lr_change = step
            if scheduler is not None:
                fields["scheduler"] = scheduler_name(scheduler)
                self._held = None
            else:
                fields["scheduler"] = None
                self._held, self._held_since = list(after), step
            factors = change.factors
            if len(set(factors)) == 1 and math.isfinite(factors[0]):
                fields["factor"] = factors[0]
            if order.stop_averaging and self.averager is not None and self.averager.stopped_at is None:
                self.averager.stop(count)  # the autopilot's average holds the equilibrium's checkpoints
                fields["averaging_stopped"] = self.averager.checkpoints
        fields["lr_before"], fields["lr_after"] = before, after
        event = {"kind": KIND_ACTION, "step": step, "time": time.time(), **fields}
        self.actions.append(event)
        if self.rank == 0:
            self._write(KIND_ACTION, step, **fields)
            self.observe([event])  # the advisor in the process reads what the log says, in its order
            self._say(f"step {step}: {order.action} ({fields.get('source', '?')}): "
                      + (f"{order.mode.upper()} averaging started" if order.action == "start_averaging"
                         else f"lr {describe_lrs(before)} -> {describe_lrs(after)}"))

    def _check_held(self, step: int) -> None:
        """With no scheduler known, an LR that changes again was changed by the training loop:
        the action did not hold. Said once."""
        now = [lr_of(g) for g in self.optimizer.param_groups]
        if now == self._held:
            return
        held, since = self._held, self._held_since
        self._held = None
        if self.rank == 0:
            message = (f"the LR changed from {describe_lrs(held)} to {describe_lrs(now)} at step {step}, {step - since} "
                       f"steps after the action of step {since}, and no LR scheduler is known to the probe: the "
                       "training loop sets the LR itself (pass scheduler= to Probe if one does it)")
            self._write("warning", step, source=WARNING_SOURCE, message=message)
            self._say(message)

    # -- reporting ---------------------------------------------------------------------------

    def _refuse(self, command_id: str, action: str | None, reason: str, step: int) -> None:
        what = f"{action} command {command_id}" if action else f"command file {command_id}"
        message = f"refused {what}: {reason}"
        fields: dict[str, Any] = {"source": WARNING_SOURCE, "message": message, "id": command_id}
        if action:
            fields["action"] = action
        self._write("warning", step, **fields)
        self._say(message)

    def _write(self, kind: str, step: int, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.write(kind, step, **fields)

    @staticmethod
    def _say(message: str) -> None:
        try:
            print(f"lrtui probe: {message}", file=sys.stderr, flush=True)
        except Exception:
            pass

    def _warn(self, source: str, message: str) -> None:
        fields: dict[str, Any] = {"source": source, "message": message}
        if source == WARNING_SOURCE:
            fields["disabled"] = True
        self._write("warning", self.step - 1 if self.step else 0, **fields)

    def _fault(self, exc: BaseException | str) -> None:
        """A fault: control off (under DDP: off for every rank at the next broadcast)."""
        if self.sync is not None and self.rank == 0:
            self._disabling = True
        elif self.sync is None:
            self.enabled = False
        self._report_fault(exc)

    def _report_fault(self, exc: BaseException | str) -> None:
        if self.rank == 0:
            self.faults.fail(WARNING_SOURCE, exc)
        elif not self._rank_fault_said:
            self._rank_fault_said = True
            self._say(f"rank {self.rank}: control fault ({exc}); training continues")

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the hook, stop the autopilot, save the averaged weights if asked (rank 0)."""
        self._hook.remove()
        if self.autopilot is not None:
            self.autopilot.close()
        if self.inbox is not None:
            self.inbox.close()
        if self.save_averaged and self.averager is not None and self.rank == 0 and self.run_dir is not None:
            try:
                path = self.averager.save(self.run_dir)
                self._write("warning", max(self.step - 1, 0), source="averaging",
                            message=f"averaged weights ({self.averager.checkpoints} checkpoints) saved to {path.name}")
            except Exception as exc:
                self.faults.fail("averaging", exc)
