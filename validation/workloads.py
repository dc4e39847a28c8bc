"""The corpus's tasks as the recording loop needs them: data, model, optimizer, one step, evaluation.

A ``Workload`` holds everything one task needs, so the recording loop, the ground-truth
measurements and the branches (copies of the model trained on at a frozen LR) all train the same
way: ``train_step`` is the user's step (zero_grad, forward and backward over the micro-batches,
gradient clipping, ``optimizer.step()``), ``evaluate`` the full-train (or test) loss and score.
The score is the accuracy (``acc``) for classifiers and the LM, R² for the regression.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from probes.tasks.char_lm import CharGRU, make_char_text
from probes.tasks.digits import make_digits_data
from probes.tasks.digits_nets import DigitsBNCNN, DigitsMLP
from probes.tasks.label_noise import random_labels, random_targets
from probes.tasks.regression import RegressionMLP, make_regression_data
from probes.tasks.ticks import (
    PlainTickMLP,
    TickMLP,
    keep_on_unit_sphere,
    make_tick_data,
)
from probes.tasks.training import top_hessian_eigenvalue

TASKS = ("digits-mlp", "digits-bncnn", "char-gru", "regression", "ticks-mlp", "catapult-mlp")
OPTIMIZERS = ("sgd", "momentum", "adamw")
#: Rows per forward pass when evaluating (keeps the memory of the LM's evaluation small).
EVAL_CHUNK = 2048
#: Characters per training sequence of the LM.
SEQ_LEN = 16


class EpochSampler:
    """Mini-batches of (x, y): a fresh seeded permutation each epoch, as a shuffling DataLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.int64)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_size >= len(self.y):
            return self.x, self.y
        if len(self.order) < self.batch_size:
            self.order = torch.randperm(len(self.y), generator=self.generator)
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        return self.x[idx], self.y[idx]


class WindowSampler:
    """LM batches: windows of ``SEQ_LEN + 1`` characters at random offsets of the training text."""

    def __init__(self, text: torch.Tensor, batch_size: int, seed: int) -> None:
        self.text, self.batch_size = text, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(SEQ_LEN + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randint(0, len(self.text) - SEQ_LEN - 1, (self.batch_size, 1), generator=self.generator)
        window = self.text[start + self.offsets]
        return window[:, :-1], window[:, 1:].flatten()


def _windows(text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The text as non-overlapping windows: inputs (N, SEQ_LEN), next-character targets (N * SEQ_LEN)."""
    n = (len(text) - 1) // SEQ_LEN
    x = text[: n * SEQ_LEN].view(n, SEQ_LEN)
    y = text[1: n * SEQ_LEN + 1].view(n, SEQ_LEN)
    return x, y.flatten()


class SignedMSE(nn.Module):
    """MSE between a scalar output and the label mapped to ±1 (the catapult papers' loss)."""

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out - (2 * y - 1)) ** 2).mean()


@dataclass
class Workload:
    """One task of the corpus.

    Attributes:
        task: its name (``TASKS``).
        kind: ``classes`` (int labels, cross-entropy), ``binary`` (float {0,1} labels, one output),
            ``lm`` (next-character cross-entropy) or ``regression`` (MSE).
        x_train, y_train, x_test, y_test: the data as the loss sees it (labels after any noise).
        make_model: a fresh, seeded model.
        loss_fn: the training loss.
        batch_size: per micro-batch (the whole training set for full-batch GD).
        accumulate: micro-batches per optimizer step (their mean loss is the step's loss).
        clip: gradient-norm clipping, or None.
        sphere: the paper's projection: trained weights rescaled to norm 1 after every step.
        text: the LM's training text (its batches are random windows of it).
        noisy_share: share of training labels replaced at random.
        chance_acc_level: the majority-class share of the training labels (classifiers, LM).
        target_variance: variance of the training targets (regression: the MSE of predicting the mean).
        target_square_sd: standard deviation of the squared deviations from the mean (regression).
    """

    task: str
    kind: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    make_model: Callable[[], nn.Module]
    loss_fn: nn.Module
    batch_size: int
    accumulate: int = 1
    clip: float | None = None
    sphere: bool = False
    text: torch.Tensor | None = None
    noisy_share: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    # -- the training side -----------------------------------------------------------------

    def trained_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def make_optimizer(self, name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        """``sgd`` (plain), ``momentum`` (SGD, heavy ball 0.9) or ``adamw`` (torch defaults, wd 0.01)."""
        params = self.trained_parameters(model)
        if name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr)
        elif name == "momentum":
            optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
        elif name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr)
        else:
            raise ValueError(f"unknown optimizer {name!r}")
        self.attach(optimizer, model)
        return optimizer

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """What the loop adds to an optimizer before the probe sees it (the sphere projection)."""
        if self.sphere:
            keep_on_unit_sphere(optimizer, self.trained_parameters(model))

    def sampler(self, seed: int) -> EpochSampler | WindowSampler:
        if self.text is not None:
            return WindowSampler(self.text, self.batch_size, seed)
        return EpochSampler(self.x_train, self.y_train, self.batch_size, seed)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   sampler: EpochSampler | WindowSampler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step. Returns (mean loss over the micro-batches, last outputs, last targets)."""
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        out = y = torch.empty(0)
        for _ in range(self.accumulate):
            x, y = sampler.next()
            out = model(x)
            loss = self.loss_fn(out, y)
            (loss / self.accumulate).backward()
            total = total + loss.detach() / self.accumulate
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        optimizer.step()
        return total, out.detach(), y

    def hessian_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed batch the probe measures sharpness on (the first 128 training rows)."""
        n = 128 if self.kind != "lm" else 16
        return self.x_train[:n], self.y_train[: n * (SEQ_LEN if self.kind == "lm" else 1)]

    # -- the measuring side ----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "train") -> tuple[float, float]:
        """Mean loss and score (accuracy, or R² for the regression) on the whole split, in eval mode."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        per_row = SEQ_LEN if self.kind == "lm" else 1
        was_training = model.training
        model.eval()
        try:
            loss_sum, hits, sq = 0.0, 0.0, 0.0
            for i in range(0, len(x), EVAL_CHUNK):
                xs, ys = x[i: i + EVAL_CHUNK], y[i * per_row: (i + EVAL_CHUNK) * per_row]
                out = model(xs)
                n = len(ys)
                loss_sum += float(self.loss_fn(out, ys)) * n
                hits += float(self.correct(out, ys))
                if self.kind == "regression":
                    sq += float(((out - ys) ** 2).sum())
            n_all = len(y)
            loss = loss_sum / n_all
            if self.kind == "regression":
                variance = float(y.var(unbiased=False))
                return loss, 1.0 - (sq / n_all) / variance if math.isfinite(sq) else -math.inf
            return loss, hits / n_all
        finally:
            model.train(was_training)

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Number of right predictions in a batch (0 for the regression)."""
        if self.kind == "regression":
            return torch.zeros(())
        if self.kind == "binary":
            return ((out > 0).to(y.dtype) == y).sum()
        return (out.argmax(1) == y).sum()

    def chance(self) -> dict[str, float]:
        """What "learned nothing" scores: see ``validation.truth.chance_threshold``."""
        y = self.y_train
        if self.kind == "regression":
            dev2 = (y - y.mean()) ** 2
            return {"metric": "r2", "baseline_mse": float(dev2.mean()), "square_sd": float(dev2.std()),
                    "n": len(y)}
        counts = torch.bincount(y.long().flatten())
        return {"metric": "acc", "majority_share": float(counts.max()) / len(y.flatten()), "n": len(y.flatten())}

    def averaged(self, models: list[nn.Module]) -> nn.Module:
        """Equal-weight average of ``models`` (same architecture); BatchNorm statistics recomputed on
        the training set, as ``torch.optim.swa_utils.update_bn`` does."""
        avg = copy.deepcopy(models[0])
        with torch.no_grad():
            for name, p in avg.named_parameters():
                p.copy_(torch.stack([dict(m.named_parameters())[name] for m in models]).mean(0))
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in avg.modules()):
            loader = [(self.x_train[i: i + 256],) for i in range(0, len(self.x_train), 256)]
            torch.optim.swa_utils.update_bn(loader, avg)
        return avg


def make_workload(task: str, noisy_share: float = 0.0, seed: int = 0) -> Workload:
    """The workload of ``task`` with a ``noisy_share`` of its training labels replaced at random."""
    if task in ("digits-mlp", "digits-bncnn"):
        data = make_digits_data(seed=0)
        y = data.y_train
        if noisy_share:
            y, _ = random_labels(y, noisy_share, 10, seed=1000 + seed)
        model_cls = DigitsMLP if task == "digits-mlp" else DigitsBNCNN
        return Workload(task, "classes", data.x_train, y, data.x_test, data.y_test,
                        lambda: model_cls(seed=seed), nn.CrossEntropyLoss(), batch_size=32,
                        noisy_share=noisy_share)
    if task == "char-gru":
        text = make_char_text(seed=0)
        x, y = _windows(text.train)
        x_test, y_test = _windows(text.test)
        return Workload(task, "lm", x, y, x_test, y_test, lambda: CharGRU(vocab=text.vocab, seed=seed),
                        nn.CrossEntropyLoss(), batch_size=16, text=text.train)
    if task == "regression":
        data = make_regression_data(seed=0)
        y = data.y_train
        if noisy_share:
            y, _ = random_targets(y, noisy_share, seed=1000 + seed)
        return Workload(task, "regression", data.x_train, y, data.x_test, data.y_test,
                        lambda: RegressionMLP(seed=seed), nn.MSELoss(), batch_size=32, noisy_share=noisy_share)
    if task == "ticks-mlp":
        data = make_tick_data(seed=0, geometry="authors")
        y = data.y_train
        if noisy_share:
            y, _ = random_labels(y, noisy_share, 2, seed=1000 + seed)
        return Workload(task, "binary", data.x_train, y, data.x_test, data.y_test, lambda: TickMLP(seed=seed),
                        nn.BCEWithLogitsLoss(), batch_size=16, sphere=True, noisy_share=noisy_share)
    if task == "catapult-mlp":
        data = make_tick_data(seed=0)
        return Workload(task, "binary", data.x_train, data.y_train, data.x_test, data.y_test,
                        lambda: PlainTickMLP(seed=seed), SignedMSE(), batch_size=len(data.y_train))
    raise ValueError(f"unknown task {task!r}")


def sharpness_at_init(workload: Workload) -> float:
    """λ_max of the full-batch loss at the seeded initialization (sets the catapult run's LR)."""
    model = workload.make_model()
    params = workload.trained_parameters(model)
    return top_hessian_eigenvalue(lambda: workload.loss_fn(model(workload.x_train), workload.y_train), params)
