"""The framework callbacks' workloads for ``benchmarks/probe_overhead.py`` table (d): step time in a
Lightning fit and an HF Trainer run, with/without ``LrtuiCallback``.

Run them with ``python benchmarks/probe_overhead.py --parts d`` (``--quick`` for a short run, ``--wall``
for wall time); this module has no table of its own. Needs the extras:
``pip install -e '.[probe,lightning,transformers]'``.

Rows: a Lightning ``Trainer.fit`` (accumulating 2 micro-batches, clipping) of a small CIFAR-shaped
CNN (batch 128) and of the tiny MLP of the tests (batch 5); a transformers ``Trainer.train``
(accumulating 2, ``max_grad_norm`` 1) of a small GPT-2 (2 layers, width 64, 64 tokens, batch 8) and
of the tests' tiny one (1 layer, width 32, 16 tokens, batch 4). Arms per row: the trainer alone,
with ``LrtuiCallback(run_dir)`` as a user adds it (no hessian batch: the per-step metrics, every
step measured), with a hessian batch at the default 5% sharpness budget, and a plain twin of the
trainer alone (the A/A arm), and the trainer with an empty callback of the framework's own base
class that overrides the same per-step hook as ``LrtuiCallback`` (the "empty" arm: what the framework
charges for any callback's hooks, which no callback can go below). Every block is one fresh
fit/train of the same number of optimizer steps, on its arm's own model (the same initial weights in every arm); the clock runs from the
optimizer step ``WARM_STEPS`` to the batch end of the last one (the probe's start-up is before
it, its median the "start-up ms" column; its closing flush, at the end of the fit, is after). Blocks of the arms alternate, their
order rotating every repetition. Columns: the median of per-repetition ratios to the trainer
alone, the ratio of the fastest blocks ("min"), and the A/A median, which would be 1.000 on a quiet
machine: a ratio within that distance of the target is not resolved by the run. "empty": the
empty callback's ratio; "over empty": the callback's blocks over the empty callback's (the part of
the slowdown that is this callback's own work and memory traffic). "own µs": the
median CPU time per step of the training thread inside the callback's hooks and the probe's
optimizer pre-hook (the direct measure, which a busy machine disturbs much less); "own %": that
over the fastest plain step. Target (issue 19): <= 1.05x with the callback.

The clock is process CPU time by default (all threads: the probe's writer thread counts), which
other jobs on a shared machine disturb far less than wall time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

CLOCK: Callable[[], float] = time.process_time
#: Optimizer steps of each run before its clock starts (first-call costs, data loader start).
WARM_STEPS = 5
ARMS = ("plain", "callback", "sharpness", "empty", "twin")


class Own:
    """CPU seconds of the training thread inside the callback's hooks and the probe's optimizer pre-hook, while ``on``.

    The direct measure of the callback's cost: the step-time ratios need a quiet machine to
    resolve a few percent, this does not (thread CPU time: another job's time slices are not in
    it; the probe's writer thread, asynchronous, is not either).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.on = False

    def timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - began

        return timed_call

    def start(self, callback: Any) -> None:
        """At the first clocked step: the probe's pre-hook work is timed from now on too."""
        probe = getattr(callback, "probe", None)
        if probe is not None and probe.steps is not None:
            probe.steps.before_step = self.timed(probe.steps.before_step)
        self.on = True


# -- Lightning ---------------------------------------------------------------------------------


def lightning_rows(steps: int, reps: int, runs: Path, only: str = "") -> list[tuple[str, dict[str, Any]]]:
    import lightning.pytorch as pl
    from probe_overhead import small_cnn  # the probe benchmark's CNN (this folder is on sys.path)

    from probes.integrations.lightning import LrtuiCallback

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

    class Timer(pl.Callback):
        """Last in the callback list: it sees each hook after the probe's callback has run."""

        def __init__(self, own: Own, callback: Any) -> None:
            self.start = self.end = 0.0
            self.own, self.callback = own, callback

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == WARM_STEPS and not self.start:
                self.own.start(self.callback)
                self.start = CLOCK()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step == trainer.max_steps and not self.end:
                self.end = CLOCK()
                self.own.on = False

    class Empty(pl.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            pass

    class Classifier(pl.LightningModule):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    g = torch.Generator().manual_seed(0)
    workloads = {
        "Lightning, small CNN, batch 128": (small_cnn, torch.randn(16 * 128, 3, 32, 32, generator=g), 10, 128),
        "Lightning, tests' MLP, batch 5": (mlp, torch.randn(40 * 5, 4, generator=g), 2, 5),
    }
    rows = []
    for name, (make, x, classes, batch) in ((k, v) for k, v in workloads.items() if only in k):
        y = torch.randint(0, classes, (len(x),), generator=g)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
        torch.manual_seed(0)
        initial = make().state_dict()
        modules = {arm: Classifier(make()) for arm in ARMS}
        for module in modules.values():
            module.net.load_state_dict(initial)
        hessian = (x[:batch], y[:batch])

        def block(arm: str, run: Path, modules: Any = modules, hessian: Any = hessian, loader: Any = loader) -> tuple[float, float, float]:
            own, before, after = Own(), StartTimer(pl.Callback), StartTimer(pl.Callback)
            callbacks: list[Any] = [before]
            callback = None
            if arm == "callback":
                callback = LrtuiCallback(run, system_stats=False)
            elif arm == "sharpness":
                callback = LrtuiCallback(run, system_stats=False, loss_fn=torch.nn.functional.cross_entropy, hessian_batch=hessian)
            elif arm == "empty":
                callbacks.append(Empty())
            if callback is not None:
                callback.on_train_batch_end = own.timed(callback.on_train_batch_end)
                callbacks.append(callback)
            timer = Timer(own, callback)
            trainer = pl.Trainer(
                max_steps=WARM_STEPS + steps, accumulate_grad_batches=2, gradient_clip_val=1.0, callbacks=[*callbacks, after, timer],
                accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0,
            )
            trainer.fit(modules[arm], loader)
            return (timer.end - timer.start) / steps, after.at - before.at, own.seconds / steps

        rows.append((name, measure(block, reps, runs / name.replace(" ", "_").replace(",", ""))))
    return rows


def StartTimer(base: type) -> Any:
    """A callback that notes the clock at ``on_train_start`` (one before the probe's and one after)."""

    class Start(base):  # type: ignore[misc,valid-type]
        at = 0.0

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.at = CLOCK()

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:  # the transformers name
            self.at = CLOCK()

    return Start()


# -- transformers --------------------------------------------------------------------------------


def transformers_rows(steps: int, reps: int, runs: Path, only: str = "") -> list[tuple[str, dict[str, Any]]]:
    import transformers

    from probes.integrations.transformers import LrtuiCallback

    transformers.logging.set_verbosity_error()

    class Timer(transformers.TrainerCallback):
        def __init__(self, own: Own, callback: Any) -> None:
            self.start = self.end = 0.0
            self.own, self.callback = own, callback

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == WARM_STEPS and not self.start:
                self.own.start(self.callback)
                self.start = CLOCK()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == state.max_steps and not self.end:
                self.end = CLOCK()
                self.own.on = False

    class Empty(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    class Sequences(torch.utils.data.Dataset):
        def __init__(self, n: int, length: int, vocab: int) -> None:
            self.ids = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(1))

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    workloads = {
        "HF Trainer, GPT-2 2x64, 64 tokens, batch 8": (dict(n_layer=2, n_embd=64, n_head=4), 64, 256, 8),
        "HF Trainer, tests' GPT-2 1x32, 16 tokens, batch 4": (dict(n_layer=1, n_embd=32, n_head=2), 16, 64, 4),
    }
    rows = []
    for name, (shape, length, vocab, batch) in ((k, v) for k, v in workloads.items() if only in k):
        data = Sequences(2 * batch * (WARM_STEPS + steps), length, vocab)
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=length, bos_token_id=0, eos_token_id=0, **shape)
        torch.manual_seed(0)
        initial = transformers.GPT2LMHeadModel(config).state_dict()
        models = {arm: transformers.GPT2LMHeadModel(config) for arm in ARMS}
        for model in models.values():
            model.load_state_dict(initial)
        hessian = transformers.default_data_collator([data[i] for i in range(batch)])

        def block(arm: str, run: Path, models: Any = models, hessian: Any = hessian, data: Any = data, batch: int = batch) -> tuple[float, float, float]:
            own, before, after = Own(), StartTimer(transformers.TrainerCallback), StartTimer(transformers.TrainerCallback)
            callbacks: list[Any] = [before]
            callback = None
            if arm == "callback":
                callback = LrtuiCallback(run, system_stats=False)
            elif arm == "sharpness":
                callback = LrtuiCallback(run, system_stats=False, hessian_batch=hessian)
            elif arm == "empty":
                callbacks.append(Empty())
            if callback is not None:
                callback._add_loss = own.timed(callback._add_loss)  # per micro-batch, from training_step
                callback.on_step_end = own.timed(callback.on_step_end)
                callbacks.append(callback)
            timer = Timer(own, callback)
            args = transformers.TrainingArguments(
                output_dir=str(run.parent / "out"), per_device_train_batch_size=batch, gradient_accumulation_steps=2,
                max_grad_norm=1.0, learning_rate=1e-3, max_steps=WARM_STEPS + steps, logging_steps=10**6,
                save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
            )
            trainer = transformers.Trainer(model=models[arm], args=args, train_dataset=data, callbacks=[*callbacks, after, timer])
            trainer.train()
            return (timer.end - timer.start) / steps, after.at - before.at, own.seconds / steps

        rows.append((name, measure(block, reps, runs / name.replace(" ", "_").replace(",", ""))))
    return rows


# -- the measurement -------------------------------------------------------------------------------


def measure(block: Callable[[str, Path], tuple[float, float, float]], reps: int, runs: Path) -> dict[str, Any]:
    """Per arm and repetition: seconds per optimizer step, the start-up seconds, the callback's own seconds per step."""
    per_step: dict[str, list[float]] = {arm: [] for arm in ARMS}
    startup: dict[str, list[float]] = {arm: [] for arm in ARMS}
    own: dict[str, list[float]] = {arm: [] for arm in ARMS}
    # The trainers print their own summaries and tips: only the table is this script's output.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(reps):
            k = r % len(ARMS)
            for arm in ARMS[k:] + ARMS[:k]:
                seconds, start, inside = block(arm, runs / f"{arm}-{r}")
                per_step[arm].append(seconds)
                startup[arm].append(start)
                own[arm].append(inside)
    return {"per_step": per_step, "startup": startup, "own": own}


def ratios(plain: list[float], other: list[float]) -> tuple[float, float]:
    """(median of per-repetition ratios, ratio of the fastest blocks)."""
    return statistics.median(o / p for o, p in zip(other, plain)), min(other) / min(plain)


def report(rows: list[tuple[str, dict[str, Any]]]) -> None:
    print(f"{'workload':52} {'plain ms':>9} {'callback':>9} {'(min)':>7} {'+sharp.':>8} {'(min)':>7} {'empty':>7} "
          f"{'over empty':>10} {'A/A':>7} {'own µs':>7} {'own %':>6} {'start-up ms':>12}")
    for name, m in rows:
        t = m["per_step"]
        cb, cb_min = ratios(t["plain"], t["callback"])
        sh, sh_min = ratios(t["plain"], t["sharpness"])
        aa, _ = ratios(t["plain"], t["twin"])
        empty, _ = ratios(t["plain"], t["empty"])
        over, _ = ratios(t["empty"], t["callback"])
        own = statistics.median(m["own"]["callback"])
        start = statistics.median(m["startup"]["callback"]) - statistics.median(m["startup"]["plain"])
        print(f"{name:52} {min(t['plain']) * 1e3:9.2f} {cb:8.3f}x {cb_min:6.3f}x {sh:7.3f}x {sh_min:6.3f}x {empty:6.3f}x "
              f"{over:9.3f}x {aa:6.3f}x "
              f"{own * 1e6:7.1f} {100 * own / min(t['plain']):5.2f}% {start * 1e3:12.1f}")
