"""The seven reported cases of issue 18, recorded by real (tiny, CPU, seeded) training through ``Probe``.

Each function trains one run the way a user's script would (an ordinary loop, a torch
optimizer and scheduler, ``probe.step(loss)`` once per optimizer step) and writes it to
``run_dir``. They are small enough to record in a test session (about a second each, one
torch thread) and deterministic (fixed seeds, ``adaptive_stride=False``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from probes import Probe
from probes.tasks.digits import make_digits_data
from probes.tasks.evaluation import evaluate
from probes.tasks.ticks import TickMLP, keep_on_unit_sphere, make_tick_data
from probes.tasks.training import _EpochSampler


def _probe(model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path, **extra: Any) -> Probe:
    return Probe(model, optimizer, run_dir, sharpness_budget=0.0, adaptive_stride=False, system_stats=False,
                 extra=extra or None)


def _mlp(inputs: int, hidden: int, outputs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def _batches(n: int, size: int, seed: int) -> Callable[[], torch.Tensor]:
    """Seeded mini-batch indices, a fresh permutation each epoch (a shuffling DataLoader)."""
    return _EpochSampler(n, size, seed).next


def _digits(noisy_fraction: float = 0.0, seed: int = 0):
    data = make_digits_data(seed=0)
    x, y = data.x_train.flatten(1), data.y_train.clone()
    if noisy_fraction:
        g = torch.Generator().manual_seed(seed + 100)
        flip = torch.rand(len(y), generator=g) < noisy_fraction
        y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return x, y


def train_digits_mlp(run_dir: Path, *, optimizer: str = "sgd", lr: float = 0.01, steps: int = 2000,
                     schedule: str = "constant", warmup: int = 0, noisy_fraction: float = 0.0, batch: int = 32,
                     eval_every: int = 0, seed: int = 0, log_loss: Callable[[int], bool] | None = None,
                     hidden: int = 32) -> dict[str, Any]:
    """An MLP on the 8x8 digits with cross-entropy: SGD, SGD-momentum or AdamW; a constant LR, a
    linear warm-up + cosine (LambdaLR), a warm-up from 0 + linear decay (``warmup_linear``, the
    Hugging Face default), OneCycleLR or CosineAnnealingLR. ``log_loss(step)`` False
    calls ``probe.step()`` without the loss for that step (what a user does who has none)."""
    x, y = _digits(noisy_fraction, seed)
    model = _mlp(64, hidden, 10, seed)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    elif optimizer == "momentum":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched: Any = None
    if schedule == "warmup_cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                                  0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    elif schedule == "warmup_linear":  # the Hugging Face default: from 0 up to lr, then linearly to 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warmup if s < warmup else
                                                  max(0.0, (steps - s) / (steps - warmup)))
    elif schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    batches = _batches(len(y), batch, seed + 1)
    with _probe(model, opt, run_dir, task="digits-mlp", noisy_fraction=noisy_fraction) as probe:
        for step in range(steps):
            idx = batches()
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            probe.step(loss if log_loss is None or log_loss(step) else None)
            if sched is not None:
                sched.step()
            if eval_every and (step + 1) % eval_every == 0:
                full, acc = evaluate(model, x, y, loss_fn)
                probe.log(full_train_loss=full, train_acc=acc)
    full, acc = evaluate(model, x, y, loss_fn)
    return {"full_train_loss": full, "train_acc": acc}


def train_ticks_large_lr(run_dir: Path, *, lr: float = 0.2, steps: int = 3000, eval_every: int = 250,
                         seed: int = 0) -> dict[str, Any]:
    """The paper's synthetic task (scale-invariant MLP on the unit sphere, plain SGD, batch 16) at
    an LR above its 2->3 boundary, logging ``train_acc`` with ``probe.log`` as a user would."""
    data = make_tick_data(seed=0, geometry="authors")
    model = TickMLP(seed=seed)
    params = model.trained_parameters()
    opt = torch.optim.SGD(params, lr=lr)
    keep_on_unit_sphere(opt, params)
    loss_fn = nn.BCEWithLogitsLoss()
    batches = _batches(len(data.y_train), 16, seed + 1)
    accs = []
    with _probe(model, opt, run_dir, task="ticks-mlp") as probe:
        for step in range(steps):
            idx = batches()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            probe.step(loss)
            if (step + 1) % eval_every == 0:
                full, acc = evaluate(model, data.x_train, data.y_train, loss_fn)
                probe.log(train_loss=full, train_acc=acc)
                accs.append(acc)
    return {"train_accs": accs}


class CharGRU(nn.Module):
    """A one-layer GRU character language model."""

    def __init__(self, vocab: int, hidden: int = 48, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, 16)
        self.gru = nn.GRU(16, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.embed(x))[0])


def generated_text(n: int, seed: int = 0) -> str:
    """Text from a small random grammar: words from a fixed vocabulary in a few sentence patterns."""
    g = torch.Generator().manual_seed(seed)
    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "and", "then", "slept", "big", "red"]
    out = []
    while sum(map(len, out)) < n:
        k = int(torch.randint(4, 9, (1,), generator=g))
        idx = torch.randint(0, len(words), (k,), generator=g).tolist()
        out.append(" ".join(words[i] for i in idx) + ". ")
    return "".join(out)[:n]


def train_char_gru(run_dir: Path, *, steps: int = 400, accumulate: int = 2, max_lr: float = 0.02,
                   seq: int = 16, micro_batch: int = 4, seed: int = 0) -> dict[str, Any]:
    """A GRU character LM on generated text: AdamW + OneCycleLR, gradient clipping, and gradient
    accumulation over ``accumulate`` micro-batches per optimizer step; ``probe.step`` once per
    optimizer step with the mean micro-batch loss (as docs/advisor.md says)."""
    text = generated_text(20000, seed)
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    model = CharGRU(len(chars), hidden=24, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed + 1)
    with _probe(model, opt, run_dir, task="char-gru", accumulate=accumulate) as probe:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(accumulate):
                start = torch.randint(0, len(data) - seq - 1, (micro_batch,), generator=g)
                window = torch.stack([data[s:s + seq + 1] for s in start.tolist()])
                logits = model(window[:, :-1])
                loss = loss_fn(logits.reshape(-1, len(chars)), window[:, 1:].reshape(-1)) / accumulate
                loss.backward()
                total += float(loss.detach())
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            probe.step(total)
            sched.step()
    return {}
