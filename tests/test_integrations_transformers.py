"""The transformers callback in a real ``Trainer.train`` of a tiny GPT-2, against what the Trainer computed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from framework_support import events, flat, norm, require

transformers = require("transformers")

from probes.integrations.transformers import LrtuiCallback  # noqa: E402

torch.set_num_threads(1)

VOCAB, LENGTH = 64, 16
#: 20 sequences in batches of 4: an epoch of 5 micro-batches, so accumulating 2 closes it with 1.
SEQUENCES, BATCH = 20, 4


class Sequences(torch.utils.data.Dataset):
    """Random token sequences that are their own labels (nothing to download, no tokenizer)."""

    def __init__(self, n: int, seed: int) -> None:
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2() -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=1, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


class Recorder(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
    """Before the probe's callback: at each optimizer step, what the Trainer hands the optimizer."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.training = False  # between on_step_begin and on_step_end: the probe's own passes come after
        self.micro_losses: list[float] = []  # each training micro-batch's mean token loss
        self.steps: list[dict[str, Any]] = []
        self.after: list[torch.Tensor] = []
        model.register_forward_hook(self._forward, with_kwargs=True)

    def _forward(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        if self.training and module.training:  # a training micro-batch, not evaluation
            logits, labels = output.logits, kwargs["labels"]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).double(), labels[:, 1:].reshape(-1))
            self.micro_losses.append(loss.item())

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                              lr_scheduler: Any = None, **kwargs: Any) -> None:
        self.steps.append({
            "micro_batches": len(self.micro_losses),
            "grad_norm": norm(p.grad for p in model.parameters()),
            "lr": [g["lr"] for g in optimizer.param_groups],
            "scheduler_lr": lr_scheduler.get_last_lr(),
            "weights_before": flat(model.parameters()),
        })

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after.append(flat(model.parameters()))


def test_train_with_accumulation_clipping_a_schedule_evaluation_and_sharpness(tmp_path: Path) -> None:
    model = tiny_gpt2()
    recorder = Recorder(model)
    train, val = Sequences(SEQUENCES, seed=1), Sequences(8, seed=2)
    hessian_batch = transformers.default_data_collator([train[i] for i in range(4)])
    callback = LrtuiCallback(tmp_path / "run", hessian_batch=hessian_batch, sharpness_budget=1.0, max_iters=3, system_stats=False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=8,
        gradient_accumulation_steps=2, max_grad_norm=1.0, learning_rate=1e-2, num_train_epochs=2,
        lr_scheduler_type="linear", warmup_steps=2, logging_steps=1, eval_strategy="epoch", save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=[recorder, callback])
    trainer.train()

    steps = events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(6)) and trainer.state.global_step == 6
    # 5 micro-batches an epoch, accumulating 2: steps of 2, 2 and 1 (the epoch end closes one).
    assert [s["micro_batches"] for s in recorder.steps] == [2, 4, 5, 7, 9, 10]
    logged = [h for h in trainer.state.log_history if "loss" in h and "eval_loss" not in h]
    for event, step, after, log in zip(steps, recorder.steps, recorder.after, logged):
        # The loss the Trainer logged for the step (transformers 4 rounds it to 4 decimals).
        assert event["loss"] == pytest.approx(log["loss"], rel=1e-6, abs=5e-5)
        assert math.isclose(event["grad_norm"], step["grad_norm"], rel_tol=1e-5)  # after max_grad_norm
        assert event["lr"] == pytest.approx(step["lr"], rel=1e-12) == step["scheduler_lr"]
        assert math.isclose(event["update_norm"], float((after - step["weights_before"]).norm()), rel_tol=1e-4)
    # The Trainer's grad_norm is before clipping: the clipping was at work on some steps, not on others.
    clipped = [log["grad_norm"] > 1.0 for log in logged]
    assert any(clipped) and not all(clipped), [log["grad_norm"] for log in logged]
    assert [e["lr"][0] for e in steps] == pytest.approx([0.0, 5e-3, 1e-2, 7.5e-3, 5e-3, 2.5e-3])  # warm-up, then linear

    metrics = events(tmp_path / "run", "metric")
    evaluations = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [m["step"] for m in metrics] == [h["step"] - 1 for h in evaluations] == [2, 5]
    for metric, evaluation in zip(metrics, evaluations):
        assert metric["eval_loss"] == pytest.approx(evaluation["eval_loss"]) and metric["epoch"] == evaluation["epoch"]
        assert not [k for k in metric if k.endswith(("_runtime", "_per_second"))]

    batch = [e for e in events(tmp_path / "run", "sharpness") if e["method"] == "batch"]
    assert batch and all(math.isfinite(e["value"]) for e in batch)  # the dict batch reached model(**batch)
    assert events(tmp_path / "run", "warning") == []
    assert events(tmp_path / "run", "end")[0]["status"] == "finished"
    assert trainer.__dict__.get("training_step") is None  # the Trainer is left as it was


def test_the_loss_is_the_mean_micro_batch_loss(tmp_path: Path) -> None:
    """For a model that takes no ``num_items_in_batch``, each step's loss is the mean of its micro-batches' losses.

    (A causal LM that takes it is normalized by the step's token count instead, as the Trainer
    counts them: the first test checks that path against the Trainer's own logged loss.)
    """
    model = tiny_gpt2()
    recorder = Recorder(model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=2,
        num_train_epochs=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Sequences(SEQUENCES, seed=1),
                                   callbacks=[recorder, LrtuiCallback(tmp_path / "run", system_stats=False)])
    trainer.model_accepts_loss_kwargs = False  # as for a model whose forward has no **kwargs
    trainer.train()
    steps = events(tmp_path / "run", "step")
    assert [s["micro_batches"] for s in recorder.steps] == [2, 4, 5] and len(steps) == 3
    first = 0
    for event, step in zip(steps, recorder.steps):
        micro = recorder.micro_losses[first : step["micro_batches"]]
        first = step["micro_batches"]
        assert math.isclose(event["loss"], sum(micro) / len(micro), rel_tol=1e-5)


def test_the_loss_is_the_step_loss_under_label_smoothing(tmp_path: Path) -> None:
    """The Trainer computes the loss itself here (the model returns none): the logged step loss is that one."""
    model = tiny_gpt2()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=2,
        label_smoothing_factor=0.1, max_steps=2, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Sequences(SEQUENCES, seed=1),
                                   callbacks=[LrtuiCallback(tmp_path / "run", system_stats=False)])
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert [e["loss"] for e in events(tmp_path / "run", "step")] == pytest.approx(logged, rel=1e-6, abs=5e-5)  # 4 decimals in v4
    assert len(logged) == 2


def test_an_unknown_probe_keyword_and_two_hessian_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown Probe keyword 'hesian_batch'"):
        LrtuiCallback(tmp_path / "run", hesian_batch={})
    with pytest.raises(TypeError, match="hessian_batch or hessian_loss, not both"):
        LrtuiCallback(tmp_path / "run", hessian_batch={"input_ids": torch.zeros(1, 2)}, hessian_loss=lambda: torch.zeros(()))


class InfiniteGradients(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
    """Makes the gradients of the given optimizer steps infinite, as an fp16 overflow would."""

    def __init__(self, model: torch.nn.Module, steps: set[int]) -> None:
        self.step = 0
        for p in model.parameters():
            p.register_hook(lambda g: g * math.inf if self.step in steps else g)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step += 1


def test_the_accelerators_grad_scaler_reaches_the_probe(tmp_path: Path, capsys: Any) -> None:
    """Steps Accelerate's GradScaler skipped (inf gradients) are logged as skipped, not as divergence.

    The Trainer refuses ``fp16`` on the CPU, so the test gives its Accelerator a CPU GradScaler
    before ``train()`` (Accelerate then scales the loss and steps through it, as under fp16 on a
    GPU); the callback is not told about it. The optimizer is not fused: a fused one's skips are
    seen without the scaler.
    """
    import json

    from lrtui.cli import main

    model = tiny_gpt2()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, learning_rate=1e-3, num_train_epochs=2,
        optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    callbacks = [InfiniteGradients(model, {2, 6}), LrtuiCallback(tmp_path / "run", system_stats=False)]
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Sequences(SEQUENCES, seed=1), callbacks=callbacks)
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    trainer.train()

    steps = events(tmp_path / "run", "step")
    assert len(steps) == trainer.state.global_step == 10
    assert [e["step"] for e in steps if e.get("skipped")] == [2, 6], steps
    assert all(math.isfinite(e["loss"]) for e in steps)
    capsys.readouterr()  # the Trainer's own log lines
    assert main(["advise", "--json", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["diverged_at_step"] is None


def test_a_train_resumed_from_a_checkpoint_continues_the_run(tmp_path: Path) -> None:
    """``train(resume_from_checkpoint=...)`` continues the run in the same directory, its steps numbered on."""
    import json

    def trainer(epochs: int, callback: LrtuiCallback) -> Any:
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, learning_rate=1e-3, num_train_epochs=epochs,
            save_strategy="epoch", report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0,
        )
        return transformers.Trainer(model=tiny_gpt2(), args=args, train_dataset=Sequences(SEQUENCES, seed=1), callbacks=[callback])

    trainer(1, LrtuiCallback(tmp_path / "run", system_stats=False)).train()
    run_id = json.loads((tmp_path / "run" / "meta.json").read_text())["run_id"]
    callback = LrtuiCallback(tmp_path / "run", system_stats=False)
    trainer(2, callback).train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5"))

    assert callback.probe is not None and callback.probe.run_dir == tmp_path / "run" and not (tmp_path / "run-2").exists()
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["run_id"] == run_id
    assert [e["step"] for e in events(tmp_path / "run", "resume")] == [5]
    assert [e["step"] for e in events(tmp_path / "run", "step")] == list(range(10))
