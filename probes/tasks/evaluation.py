"""Full-dataset loss and accuracy of a task model, for the metrics the sample runs log."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on (x, y).

    Binary tasks (labels float, outputs of shape (N,)) count a logit > 0 as class 1; multi-class
    tasks take the arg-max. The model is put in eval mode and back to its previous mode.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        loss = float(loss_fn(out, y))
        if out.dim() == 1:
            correct = ((out > 0).float() == y).float().mean()
        else:
            correct = (out.argmax(1) == y).float().mean()
        return loss, float(correct)
    finally:
        model.train(was_training)
