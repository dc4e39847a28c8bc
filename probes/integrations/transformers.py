"""``LrtuiCallback`` for the Hugging Face ``transformers`` Trainer: the probe inside ``Trainer.train``."""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

import torch

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("probes.integrations.transformers needs transformers: pip install 'lrtui[transformers]'") from exc

from probes.distributed import unwrap_module
from probes.integrations.frameworks import check_probe_options, resumed_at, start_probe, user_metrics
from probes.probe import Probe, _to_device

#: Suffixes of the evaluation metrics that time the evaluation rather than judge the model.
TIMING_SUFFIXES = ("_runtime", "_per_second", "_preparation_time")
#: Frames looked through for the Trainer that calls ``on_train_begin``.
MAX_FRAMES = 16


class LrtuiCallback(TrainerCallback):
    """Logs a Hugging Face ``Trainer`` run to ``run_dir`` as a ``Probe`` would in a hand-written loop.

    Example:
        >>> from probes.integrations.transformers import LrtuiCallback          # doctest: +SKIP
        >>> trainer = Trainer(model=model, args=args, train_dataset=train,      # doctest: +SKIP
        ...                   eval_dataset=val, callbacks=[LrtuiCallback("runs/x")])
        >>> trainer.train()                                                       # doctest: +SKIP

    What it logs: one ``step`` event per optimizer step, also with
    ``gradient_accumulation_steps`` > 1 and for the shorter accumulation that closes an
    epoch. Its loss is that step's training loss as the Trainer computes it: the sum over the
    step's micro-batches of what ``Trainer.training_step`` returned (each micro-batch's loss
    divided by the number of micro-batches, or normalized by the step's token count when the
    model takes ``num_items_in_batch``), so the mean micro-batch loss, for every step rather
    than the ``logging_steps`` average. Its gradient norm is that of the gradients the
    optimizer stepped with, after ``max_grad_norm`` clipping (the Trainer's own logged
    ``grad_norm`` is the norm before clipping); its learning rates are those the step used
    (the Trainer logs the scheduler's next one). The metrics of each evaluation
    (``on_evaluate``: ``eval_loss``, ``eval_accuracy``, ..., without the timings) reach the run as
    a ``metric`` event at the last optimizer step taken.

    Under ``fp16`` the Accelerator's ``GradScaler`` is given to the probe (unless ``scaler=``
    is), so the steps it skips are logged as skipped, never as divergence.

    A ``train(resume_from_checkpoint=...)`` continues the run in ``run_dir``
    (``Probe(resume=True, start_step=state.global_step)``) unless ``resume=`` is given.

    Sharpness: give ``hessian_batch`` as a dict batch the model takes (``model(**batch)``, with
    ``labels`` so that it returns a loss), e.g. ``data_collator([train[i] for i in range(32)])``;
    the loss is ``model(**batch).loss``, or ``loss_fn(outputs, batch)`` when ``loss_fn`` is
    given. An ``(inputs, targets)`` tuple with ``loss_fn(model(inputs), targets)``, or a
    ``hessian_loss`` callable, work as in ``Probe``.

    Args:
        run_dir: the run directory to create.
        **probe_options: ``Probe`` keywords (``hessian_batch``, ``loss_fn``, ``hessian_loss``,
            ``sharpness_budget``, ``stride``, ...).
    """

    def __init__(self, run_dir: Any, **probe_options: Any) -> None:
        check_probe_options(probe_options, "LrtuiCallback")
        if isinstance(probe_options.get("hessian_batch"), Mapping) and probe_options.get("hessian_loss") is not None:
            raise TypeError("LrtuiCallback: give hessian_batch or hessian_loss, not both")
        self.run_dir = run_dir
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self._loss_sum: Any = None  # this step's micro-batch losses so far, still on the device
        self._restore: Callable[[], None] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        if self.probe is not None:
            self._finish()  # a second train() with the same callback: the first run is complete
        if model is None or optimizer is None:
            return
        options = dict(self.probe_options)
        if isinstance(options.get("hessian_batch"), Mapping):
            options["hessian_loss"] = _dict_batch_loss(model, options.pop("hessian_batch"), options.pop("loss_fn", None))
        trainer = _calling_trainer(self)
        if options.get("scaler") is None:
            # Under fp16 the Trainer steps through Accelerate's GradScaler: the probe needs it to
            # tell the steps the scaler skipped (inf/NaN gradients) from the ones it took.
            options["scaler"] = getattr(getattr(trainer, "accelerator", None), "scaler", None)
        resumed_at(options, getattr(state, "global_step", 0))
        self.probe = probe = start_probe(model, optimizer, self.run_dir, options, _trainer_settings(args))
        self._loss_sum = None
        if probe is None:
            return
        if trainer is not None:
            self._restore = _record_training_losses(trainer, self._add_loss, lambda exc: probe.faults.fail("loss", exc))
        else:
            probe.faults.fail("loss", "the Trainer was not found: steps are logged without their loss", disables=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.probe is not None:
            loss, self._loss_sum = self._loss_sum, None
            self.probe.step(loss)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self.probe is None or not metrics:
            return
        values = user_metrics(metrics, skip=[k for k in metrics if str(k).endswith(TIMING_SUFFIXES)])
        if values:
            self.probe.log(**values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish()

    def _add_loss(self, loss: Any) -> None:
        if isinstance(loss, torch.Tensor):
            if loss.requires_grad:  # Trainer.training_step returns it detached already: no call then
                loss = loss.detach()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss

    def _finish(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None
        if self.probe is not None:
            self.probe.close()


def _calling_trainer(callback: LrtuiCallback) -> Any:
    """The ``Trainer`` whose ``train`` is calling ``callback.on_train_begin`` now, or None.

    Callbacks are not given the Trainer, and what its ``training_step`` returns (the loss the
    Trainer sums into its logged loss) is nowhere else: so it is found on the call stack, as
    the ``self`` of a frame whose callback handler holds this callback.
    """
    try:
        frame = sys._getframe(1)
        for _ in range(MAX_FRAMES):
            if frame is None:
                break
            candidate = frame.f_locals.get("self")
            handler = getattr(candidate, "callback_handler", None)
            if handler is not None and any(cb is callback for cb in getattr(handler, "callbacks", ())):
                return candidate if callable(getattr(candidate, "training_step", None)) else None
            frame = frame.f_back
    except Exception:  # an interpreter without frames, an odd object on the stack: no Trainer
        return None
    return None


def _record_training_losses(trainer: Any, record: Callable[[Any], None], failed: Callable[[Exception], None]) -> Callable[[], None]:
    """Make ``trainer.training_step`` also hand its result to ``record``; returns the undo.

    The result itself is returned unchanged; an error in ``record`` goes to ``failed``, never
    to the Trainer.
    """
    original = trainer.training_step

    def training_step(*args: Any, **kwargs: Any) -> Any:
        loss = original(*args, **kwargs)
        try:
            record(loss)
        except Exception as exc:
            failed(exc)
        return loss

    trainer.training_step = training_step

    def restore() -> None:
        if trainer.__dict__.get("training_step") is training_step:
            del trainer.training_step

    return restore


def _dict_batch_loss(model: torch.nn.Module, batch: Mapping[str, Any], loss_fn: Callable[[Any, Any], torch.Tensor] | None) -> Callable[[], torch.Tensor]:
    """The loss on a fixed dict batch, on the unwrapped model (no DDP collective in an HVP).

    The batch goes to the model's device at the first call, which the probe makes inside its
    own error handling (a batch that cannot move disables sharpness, not the training).
    """
    module = unwrap_module(model)
    fixed: dict[str, Any] = {}

    def hessian_loss() -> torch.Tensor:
        if not fixed:
            first = next(iter(module.parameters()), None)
            fixed.update(_to_device(dict(batch), first.device if first is not None else torch.device("cpu")))
        outputs = module(**fixed)  # the probe runs it on the math attention kernel (probes.attention)
        if loss_fn is not None:
            return loss_fn(outputs, fixed)
        return outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]

    return hessian_loss


def _trainer_settings(args: Any) -> dict[str, Any]:
    """What the Trainer does to each step, for ``meta.json``: accumulation, clipping, schedule."""
    return {
        "framework": "transformers",
        "version": transformers.__version__,
        "gradient_accumulation_steps": getattr(args, "gradient_accumulation_steps", None),
        "max_grad_norm": getattr(args, "max_grad_norm", None),
        "lr_scheduler_type": str(getattr(getattr(args, "lr_scheduler_type", None), "value", None)),
    }
