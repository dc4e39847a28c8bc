"""A small CNN on scikit-learn's 8x8 digits: a real dataset that ships inside a package."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DigitsData:
    """Train and test split of the digits: images (N, 1, 8, 8) in [0, 1], labels (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_digits_data(seed: int = 0, n_train: int = 1200) -> DigitsData:
    """The 1797 digits, shuffled with ``seed``; the first ``n_train`` train, the rest test."""
    from sklearn.datasets import load_digits  # only the sample tasks need scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return DigitsData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear classifier, no normalization (so sharpness can grow)."""

    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8x8 -> 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> 2x2
        )
        self.classifier = nn.Linear(2 * width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        return self.classifier(self.features(x).flatten(1))
