"""Two more models for scikit-learn's 8x8 digits: an MLP and a CNN with BatchNorm (validation corpus)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """One hidden ReLU layer on the 64 pixels: the plain MLP a first experiment uses."""

    def __init__(self, hidden: int = 128, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        return self.net(x)


class DigitsBNCNN(nn.Module):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU, then a linear classifier.

    BatchNorm makes the convolution weights scale-invariant, so a large learning rate shrinks
    their effective step as their norm grows instead of blowing the loss up: the usual reason a
    CNN tolerates LRs an MLP does not.
    """

    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),  # -> 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),  # -> 2x2
        )
        self.classifier = nn.Linear(2 * width * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 10)."""
        return self.classifier(self.features(x).flatten(1))
