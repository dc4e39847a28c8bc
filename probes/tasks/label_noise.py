"""Noisy labels for the validation corpus: a share of the training labels replaced at random."""

from __future__ import annotations

import torch


def random_labels(y: torch.Tensor, share: float, n_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``share`` of the labels with labels drawn uniformly from all ``n_classes``.

    Symmetric label noise, as in the memorization experiments (Zhang et al. 2017): a replaced
    label may by chance equal the true one. Works for int64 class labels and float {0, 1} labels.

    Returns:
        (noisy labels of ``y``'s dtype, bool mask of the points whose label was replaced).
    """
    g = torch.Generator().manual_seed(seed)
    replaced = torch.rand(len(y), generator=g) < share
    drawn = torch.randint(0, n_classes, (len(y),), generator=g).to(y.dtype)
    return torch.where(replaced, drawn, y), replaced


def random_targets(y: torch.Tensor, share: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a ``share`` of regression targets with targets of other points, drawn at random.

    The marginal distribution of the targets stays the same; the replaced ones carry no
    information about their inputs.

    Works for targets of shape (N,) and (N, k): a replaced point gets another point's whole row.

    Returns:
        (noisy targets of ``y``'s shape, bool mask (N,) of the replaced points).
    """
    g = torch.Generator().manual_seed(seed)
    replaced = torch.rand(len(y), generator=g) < share
    drawn = y[torch.randint(0, len(y), (len(y),), generator=g)]
    mask = replaced.view(-1, *([1] * (y.dim() - 1)))  # (N, 1, ...): one decision per point, not a broadcast to (N, N)
    return torch.where(mask, drawn, y), replaced
