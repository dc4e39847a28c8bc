"""A regression task: Friedman's function #1 with Gaussian noise, and a small MLP for it.

y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5 + noise, x uniform in [0, 1]^10 (five of
the ten inputs are irrelevant); Friedman (1991), also ``sklearn.datasets.make_friedman1``. The
targets are left unscaled (mean ~14, variance ~24 + noise), as a first experiment leaves them:
an untrained network's MSE is ~10x the variance, and a network that learns only the mean has
come down that far without learning anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

N_INPUTS = 10


@dataclass
class RegressionData:
    """Train and test split: inputs (N, 10) float32, targets (N, 1) float32."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def friedman1(x: torch.Tensor) -> torch.Tensor:
    """The noise-free target of Friedman #1 for inputs (N, >= 5), shape (N, 1)."""
    y = (10 * torch.sin(math.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
         + 10 * x[:, 3] + 5 * x[:, 4])
    return y.unsqueeze(1)


def make_regression_data(seed: int = 0, n_train: int = 1000, n_test: int = 1000,
                         noise: float = 1.0) -> RegressionData:
    """Draw the train and test points with a seeded generator (noise: standard deviation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, N_INPUTS, generator=g)
    y = friedman1(x) + noise * torch.randn(n_train + n_test, 1, generator=g)
    return RegressionData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


class RegressionMLP(nn.Module):
    """Two hidden ReLU layers, a linear output."""

    def __init__(self, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(N_INPUTS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions of shape (N, 1)."""
        return self.net(x)
