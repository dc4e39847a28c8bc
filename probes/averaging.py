"""Weight averaging started mid-run: ``torch.optim.swa_utils.AveragedModel`` as SWA or EMA.

SWA (Izmailov et al. 2018) keeps the equal-weight mean of a checkpoint every ``checkpoint_every``
optimizer steps; EMA updates an exponential moving average with ``ema_decay`` at every step (and
averages buffers too, as ``get_ema_multi_avg_fn`` is meant to be used). The first checkpoint is
the weights when averaging starts. A model with BatchNorm needs its statistics recomputed for the
averaged weights before it is evaluated: ``torch.optim.swa_utils.update_bn(loader, averaged)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

#: File the averaged weights are saved to in the run directory (``Probe(save_averaged=True)``).
AVERAGED_FILE = "averaged_model.pt"
_BATCHNORM = (torch.nn.modules.batchnorm._BatchNorm,)


class WeightAveraging:
    """An ``AveragedModel`` of ``module`` fed on a fixed step schedule from ``start_step`` on.

    Args:
        module: the trained module (unwrapped: never a DDP wrapper).
        mode: ``"swa"`` or ``"ema"``.
        checkpoint_every: SWA: optimizer steps between checkpoints.
        ema_decay: EMA: the decay per step.
        start_step: the optimizer step about to run when averaging starts, on the clock
            ``before_step`` is called with (the control's count of optimizer steps).
    """

    def __init__(self, module: torch.nn.Module, mode: str, checkpoint_every: int, ema_decay: float,
                 start_step: int) -> None:
        self.mode = mode
        self.module = module
        self.every = 1 if mode == "ema" else max(1, int(checkpoint_every))
        self.ema_decay = float(ema_decay)
        self.start_step = start_step
        if mode == "ema":
            self.model = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
        else:
            self.model = AveragedModel(module)
        self.model.update_parameters(module)
        self.has_batchnorm = any(isinstance(m, _BATCHNORM) for m in module.modules())
        self.stopped_at: int | None = None

    def before_step(self, step: int) -> None:
        """At the optimizer pre-step hook of ``step``: the weights the steps before left."""
        if self.stopped_at is None and step > self.start_step and (step - self.start_step) % self.every == 0:
            self.model.update_parameters(self.module)

    def stop(self, step: int) -> None:
        """Take no more checkpoints from ``step`` on (the average so far is kept)."""
        if self.stopped_at is None:
            self.stopped_at = step

    @property
    def checkpoints(self) -> int:
        return int(self.model.n_averaged.item())

    def describe(self) -> dict[str, object]:
        """The ``averaging`` field of the ``action`` event."""
        out: dict[str, object] = {"mode": self.mode}
        if self.mode == "swa":
            out["checkpoint_every"] = self.every
        else:
            out["ema_decay"] = self.ema_decay
        out["batchnorm"] = self.has_batchnorm
        return out

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """The averaged weights as a ``state_dict`` of the trained module (load it into the
        model with ``load_state_dict``), written to a temporary name and renamed."""
        path = Path(run_dir) / AVERAGED_FILE
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.model.module.state_dict(), tmp)
        os.replace(tmp, path)
        return path
