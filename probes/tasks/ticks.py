"""The paper's synthetic task in miniature: "tick" features and the scale-invariant MLP.

Sadrtdinov et al. (2024, arXiv 2410.22113) train a small MLP on 32 inputs made of 16
two-dimensional "tick" features (margin 0.1), 512 train / 2000 test points, binary labels. Two
geometries of those features are here:

``"ours"`` (the demo's data, and the sample sweep's until 2026-11-29): our reconstruction from the
paper's text, written before we found the authors' released generator. It keeps what we took to matter for the LR regimes:
features of different reliability, one of which alone separates the classes with margin 0.1.
Feature k is a point (t, v) in the plane. t ~ U(-1, 1); the *tick* is the check-mark curve
h(t) = max(-t/2, t) (a short arm falling to the origin, a long arm rising from it). A point whose
feature "agrees" with its label lies above the tick for label 1 and below it for label 0, at a
vertical distance in [margin, margin + 0.5]; a point whose feature "disagrees" lies on the other
side. Feature 0 agrees on every point, so every split is separable by feature 0 alone with margin
0.1 (a ReLU network can draw the tick with two units; a linear classifier cannot). Feature k >= 1
agrees with probability ``reliability[k]``, falling linearly from 0.9 to 0.55.

``"authors"`` (the recorded sample sweep): the geometry of the authors' generator (github.com/isadrtdinov/understanding-large-lrs,
``synthetic_example/dataset.py``, ``Sampler.sample_tick``, with the paper's settings from its
``launch-final.ipynb``: every feature informative, no swapped points), re-implemented from that
description. Each feature is a point uniform in the square [-2, 2]^2; label 0 lies in the
V-shaped band |t| - 2 + m <= v <= |t| - m, label 1 above it (v >= |t| + m) or below it
(v <= |t| - 2 - m), m = margin * sqrt(2) (a distance of ``margin`` across the slope-1 arms). So
every one of the 16 features alone separates every point, none linearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

#: Setting of the paper's synthetic experiment.
N_FEATURES = 16
MARGIN = 0.1
N_TRAIN = 512
N_TEST = 2000
HIDDEN = 32
LAST_LAYER_NORM = 10.0


def tick(t: torch.Tensor) -> torch.Tensor:
    """The tick-shaped boundary h(t) = max(-t/2, t)."""
    return torch.maximum(-0.5 * t, t)


def feature_reliability(n_features: int = N_FEATURES) -> torch.Tensor:
    """Probability that each feature agrees with the label: 1 for feature 0, then 0.9 down to 0.55."""
    rest = torch.linspace(0.9, 0.55, n_features - 1)
    return torch.cat([torch.ones(1), rest])


@dataclass
class TickData:
    """Train and test split of the tick task: inputs (N, 32) float32, labels (N,) float32 in {0, 1}."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def sample_ticks(n: int, generator: torch.Generator, n_features: int = N_FEATURES,
                 margin: float = MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` points of the tick task (balanced labels in expectation).

    Returns:
        (x, y): x of shape (n, 2 * n_features), laid out as (t_0, v_0, t_1, v_1, ...); y in {0, 1}.
    """
    y = torch.randint(0, 2, (n,), generator=generator).float()
    side = 2 * y - 1  # +1 above the tick, -1 below
    agree = torch.rand(n, n_features, generator=generator) < feature_reliability(n_features)
    sign = torch.where(agree, side[:, None], -side[:, None])
    t = 2 * torch.rand(n, n_features, generator=generator) - 1
    distance = margin + 0.5 * torch.rand(n, n_features, generator=generator)
    v = tick(t) + sign * distance
    x = torch.stack([t, v], dim=2).reshape(n, 2 * n_features)
    return x, y


def sample_band_ticks(n: int, generator: torch.Generator, n_features: int = N_FEATURES,
                      margin: float = MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` points of the authors' geometry (see the module docstring), by rejection.

    Returns:
        (x, y) laid out as in ``sample_ticks``: x of shape (n, 2 * n_features), y in {0, 1}.
    """
    y = torch.randint(0, 2, (n,), generator=generator).float()
    m = margin * math.sqrt(2)
    features = []
    for _ in range(n_features):
        feature = torch.empty(n, 2)
        for label in (0, 1):
            rows = torch.nonzero(y == label).squeeze(1)
            accepted: list[torch.Tensor] = []
            while sum(len(a) for a in accepted) < len(rows):
                p = 4 * torch.rand(4 * len(rows) + 16, 2, generator=generator) - 2
                arm = p[:, 0].abs()
                if label == 0:
                    keep = (p[:, 1] >= arm - 2 + m) & (p[:, 1] <= arm - m)
                else:
                    keep = (p[:, 1] >= arm + m) | (p[:, 1] <= arm - 2 - m)
                accepted.append(p[keep])
            feature[rows] = torch.cat(accepted)[: len(rows)]
        features.append(feature)
    return torch.cat(features, dim=1), y


#: The feature geometries ``make_tick_data`` knows (see the module docstring).
GEOMETRIES = {"ours": sample_ticks, "authors": sample_band_ticks}


def make_tick_data(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST, geometry: str = "ours") -> TickData:
    """The fixed train/test split used by every sweep run (same seed, same data)."""
    sample = GEOMETRIES[geometry]
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = sample(n_train, g)
    x_test, y_test = sample(n_test, g)
    return TickData(x_train, y_train, x_test, y_test)


class TickMLP(nn.Module):
    """3-layer bias-free MLP: (Linear -> LayerNorm without affine -> ReLU) x 2 -> fixed Linear.

    The two hidden layers are followed by LayerNorm, so the output does not change when their
    weights are scaled: the network is scale-invariant in its trained weights, and with those
    weights kept at total norm 1 the learning rate is the effective learning rate. The last layer
    is frozen at norm ``LAST_LAYER_NORM``, as in the paper, so it cannot absorb the scale.
    """

    def __init__(self, in_features: int = 2 * N_FEATURES, hidden: int = HIDDEN,
                 seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden, bias=False),
            nn.LayerNorm(hidden, elementwise_affine=False),
            nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False),
            nn.LayerNorm(hidden, elementwise_affine=False),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, 1, bias=False)
        with torch.no_grad():
            for layer in (self.body[0], self.body[3]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
            head = torch.randn(self.head.weight.shape, generator=g)
            self.head.weight.copy_(head * (LAST_LAYER_NORM / head.norm()))
        self.head.weight.requires_grad_(False)
        rescale_to_unit_norm(self.trained_parameters())

    def trained_parameters(self) -> list[nn.Parameter]:
        """The weights SGD trains (the two hidden layers); the head is fixed."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N,)."""
        return self.head(self.body(x)).squeeze(-1)


@torch.no_grad()
def rescale_to_unit_norm(params: list[nn.Parameter]) -> None:
    """Scale ``params`` together so their total L2 norm is 1 (the paper's projection to the sphere)."""
    norm = torch.sqrt(sum((p * p).sum() for p in params))
    if torch.isfinite(norm) and norm > 0:
        for p in params:
            p.div_(norm)


def keep_on_unit_sphere(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Rescale ``params`` to total norm 1 after every ``optimizer.step()``.

    Registered as an optimizer step post-hook *before* the probe is attached, so it runs first and
    the probe sees the weights as training leaves them (on the sphere).
    """
    optimizer.register_step_post_hook(lambda opt, args, kwargs: rescale_to_unit_norm(params))


class PlainTickMLP(nn.Module):
    """The same MLP without normalization, trainable head, default init: not scale-invariant.

    Used for the diverging and catapult sample runs, where the learning rate must be able to
    blow the weights up (the normalized model cannot diverge: its weights stay on the sphere).
    """

    def __init__(self, in_features: int = 2 * N_FEATURES, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of shape (N,)."""
        return self.net(x).squeeze(-1)
