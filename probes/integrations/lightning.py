"""``LrtuiCallback`` for PyTorch Lightning (``lightning`` or ``pytorch_lightning``): the probe inside a ``Trainer``."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch

from probes.integrations.frameworks import check_probe_options, resumed_at, start_probe, user_metrics
from probes.probe import Probe

#: The packages Lightning ships as, in the order they are tried when neither is imported yet.
LIGHTNING_PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def _lightning() -> Any:
    """The Lightning package in use: the one already imported (``lightning`` first), else the one installed."""
    for name in LIGHTNING_PACKAGES:
        if name in sys.modules:
            return sys.modules[name]
    for name in LIGHTNING_PACKAGES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("probes.integrations.lightning needs Lightning: pip install 'lrtui[lightning]'")


_pl = _lightning()


class LrtuiCallback(_pl.Callback):  # type: ignore[misc,name-defined]
    """Logs a Lightning run to ``run_dir`` as a ``Probe`` would in a hand-written loop.

    Example:
        >>> import lightning as L                                              # doctest: +SKIP
        >>> from probes.integrations.lightning import LrtuiCallback            # doctest: +SKIP
        >>> trainer = L.Trainer(max_epochs=10, accumulate_grad_batches=2,     # doctest: +SKIP
        ...                     callbacks=[LrtuiCallback("runs/x")])
        >>> trainer.fit(model, train_loader, val_loader)                       # doctest: +SKIP

    What it logs: one ``step`` event per optimizer step, also with ``accumulate_grad_batches``
    > 1 and for the shorter accumulation that closes an epoch. Its loss is the mean of that
    step's micro-batch losses (as ``training_step`` returned them, before Lightning divides
    them by ``accumulate_grad_batches``); its gradient norm is that of the gradients the
    optimizer stepped with, after Lightning's gradient clipping; its learning rates are those
    in force at the step, whatever the scheduler's interval. Every metric ``self.log``'d during
    a validation run (``val_loss``, ``val_acc``, ...) reaches the run as a ``metric`` event at the
    last optimizer step taken (not those of the sanity check).

    Under ``precision="16-mixed"`` the precision plugin's ``GradScaler`` is given to the probe
    (unless ``scaler=`` is), so the steps it skips are logged as skipped, never as divergence.

    A fit resumed from a checkpoint (``ckpt_path=``) continues the run in ``run_dir``
    (``Probe(resume=True, start_step=trainer.global_step)``) unless ``resume=`` is given.

    The run starts at ``on_train_start`` with the Trainer's first optimizer (under DDP only rank
    0 writes) and ends at the end of ``fit``, ``"failed"`` if it raised.

    Args:
        run_dir: the run directory to create.
        **probe_options: ``Probe`` keywords (``loss_fn``, ``hessian_batch``, ``hessian_loss``,
            ``sharpness_budget``, ``stride``, ...). ``loss_fn(model(inputs), targets)`` is called
            with the LightningModule's ``forward``.
    """

    def __init__(self, run_dir: Any, **probe_options: Any) -> None:
        check_probe_options(probe_options, "LrtuiCallback")
        super().__init__()
        self.run_dir = run_dir
        self.probe_options = probe_options
        self.probe: Probe | None = None
        self._loss_sum: Any = None  # this step's micro-batch losses so far, still on the device
        self._micro_batches = 0
        self._global_step = 0
        self._before_validation: dict[str, Any] = {}

    # -- the run -----------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.probe is not None:
            self.probe.close()  # a second fit with the same callback: the first run is complete
        optimizers = list(trainer.optimizers)
        if not optimizers:
            return
        options = dict(self.probe_options)
        if options.get("scaler") is None:
            # Lightning's 16-mixed precision steps through its own GradScaler: the probe needs it
            # to tell the steps the scaler skipped (inf/NaN gradients) from the ones it took.
            options["scaler"] = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        resumed_at(options, trainer.global_step)
        self.probe = start_probe(pl_module, optimizers[0], self.run_dir, options, _trainer_settings(trainer))
        if self.probe is not None and len(optimizers) > 1:
            self.probe.faults.fail(
                "lightning", f"the Trainer has {len(optimizers)} optimizers: the probe measures the first", disables=False
            )
        self._global_step = trainer.global_step
        self._loss_sum, self._micro_batches = None, 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        probe = self.probe
        if probe is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            if loss.requires_grad:  # Lightning hands hooks a detached copy already: no call then
                loss = loss.detach()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._micro_batches += 1
        if trainer.global_step == self._global_step:
            return  # accumulating: no optimizer step in this batch
        self._global_step = trainer.global_step
        mean = None
        if self._micro_batches:
            # Under automatic optimization Lightning divides each loss by accumulate_grad_batches
            # (also in an epoch's shorter last accumulation); manual optimization returns it as is.
            # A full accumulation (as many micro-batches as the scale) needs no multiplication.
            scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            mean = self._loss_sum if scale == self._micro_batches else self._loss_sum * (scale / self._micro_batches)
        self._loss_sum, self._micro_batches = None, 0
        probe.step(mean)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        # Kept by reference: the values logged during validation are new objects, the others
        # stay the same ones (and holding them keeps their ids from being reused).
        self._before_validation = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        before, self._before_validation = self._before_validation, {}
        if self.probe is None or trainer.sanity_checking:
            return
        logged = {k: v for k, v in trainer.callback_metrics.items() if before.get(k) is not v}
        metrics = user_metrics(logged)
        if metrics:
            self.probe.log(**metrics)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.probe is not None:
            self.probe.close("failed", exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self.probe is not None:
            self.probe.close()


def _trainer_settings(trainer: Any) -> dict[str, Any]:
    """What the Trainer does to each step, for ``meta.json``: accumulation and clipping."""
    return {
        "framework": _pl.__name__.split(".")[0],
        "version": getattr(_pl, "__version__", None),
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm),
    }
