"""The Lightning callback in real ``Trainer.fit`` runs, against what the framework computed at each step."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from framework_support import events, flat, norm, require

L = require("lightning.pytorch")

from probes.integrations.lightning import LrtuiCallback  # noqa: E402

torch.set_num_threads(1)

#: 25 samples in batches of 5: an epoch of 5 batches, so accumulating 2 closes it with 1.
SAMPLES, BATCH = 25, 5


def data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, 4, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())


def recorded_module(base: Any, interval: str = "step", lr: float = 0.5, fail_at: int | None = None) -> Any:
    """A tiny classifier that records, at each optimizer step, what Lightning gave the optimizer."""

    class Recorded(base):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
            self.micro_losses: list[float] = []  # each training_step's loss, as it returned it
            self.steps: list[dict[str, Any]] = []  # per optimizer step, inside the closure
            self.after: list[torch.Tensor] = []  # the weights after each optimizer step

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if fail_at is not None and len(self.micro_losses) == fail_at:
                raise RuntimeError("the data went bad")
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.micro_losses.append(loss.item())
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            out = self.net(x)
            self.log("val_loss", F.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None) -> None:
            # Lightning calls this inside the optimizer's closure, after backward, before the update.
            before_clip = norm(p.grad for p in self.parameters())
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            self.steps.append({
                "micro_batches": len(self.micro_losses),
                "before_clip": before_clip,
                "grad_norm": norm(p.grad for p in self.parameters()),
                "lr": [g["lr"] for g in optimizer.param_groups],
                "weights_before": flat(self.parameters()),
            })

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            if len(self.after) < len(self.steps):
                self.after.append(flat(self.parameters()))

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7 if interval == "step" else 0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    return Recorded()


class SeenMetrics(L.Callback):  # type: ignore[misc,name-defined]
    """Placed after the probe's callback: what ``callback_metrics`` held at each validation end."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, dict[str, float]]] = []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.seen.append((trainer.global_step, {k: float(v) for k, v in trainer.callback_metrics.items()}))


def quiet_trainer(package: Any, **kwargs: Any) -> Any:
    return package.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )


def check_steps_against_the_framework(module: Any, run_dir: Path) -> list[dict[str, Any]]:
    """Every step event equals what Lightning computed for that optimizer step; returns them."""
    steps = events(run_dir, "step")
    assert [e["step"] for e in steps] == list(range(len(module.steps)))
    first = 0
    for event, step, after in zip(steps, module.steps, module.after):
        micro = module.micro_losses[first : step["micro_batches"]]
        first = step["micro_batches"]
        assert math.isclose(event["loss"], sum(micro) / len(micro), rel_tol=1e-6)
        assert math.isclose(event["grad_norm"], step["grad_norm"], rel_tol=1e-5)
        assert event["lr"] == pytest.approx(step["lr"], rel=1e-12)
        assert math.isclose(event["update_norm"], float((after - step["weights_before"]).norm()), rel_tol=1e-4)
    return steps


def test_fit_with_accumulation_clipping_a_step_scheduler_and_validation(tmp_path: Path) -> None:
    module = recorded_module(L.LightningModule)
    seen = SeenMetrics()
    x, y = data(seed=1).tensors
    probe = LrtuiCallback(tmp_path / "run", loss_fn=F.cross_entropy, hessian_batch=(x[:10], y[:10]),
                          sharpness_budget=1.0, system_stats=False)
    trainer = quiet_trainer(L, max_epochs=2, accumulate_grad_batches=2, gradient_clip_val=0.6, callbacks=[probe, seen])
    trainer.fit(module, DataLoader(data(), batch_size=BATCH), DataLoader(data(seed=2), batch_size=10))

    steps = check_steps_against_the_framework(module, tmp_path / "run")
    # 5 batches an epoch, accumulating 2: steps of 2, 2 and 1 micro-batches (the epoch end closes one).
    assert [s["micro_batches"] for s in module.steps] == [2, 4, 5, 7, 9, 10]
    assert len(steps) == trainer.global_step == 6
    # The clipping was at work on some steps and not on others, so grad_norm tells them apart.
    clipped = [s["before_clip"] > 0.6 for s in module.steps]
    assert any(clipped) and not all(clipped), [s["before_clip"] for s in module.steps]
    assert [e["lr"][0] for e in steps] == pytest.approx([0.5 * 0.7**k for k in range(6)])

    metrics = events(tmp_path / "run", "metric")  # after each epoch; the sanity check is not logged
    assert [m["step"] for m in metrics] == [global_step - 1 for global_step, _ in seen.seen] == [2, 5]
    for metric, (_, values) in zip(metrics, seen.seen):
        assert metric["val_acc"] == pytest.approx(values["val_acc"]) and metric["val_loss"] == pytest.approx(values["val_loss"])
        assert set(metric) == {"kind", "step", "time", "val_acc", "val_loss"}

    hessian = [e for e in events(tmp_path / "run", "sharpness") if e["method"] == "hessian"]
    assert hessian and all(math.isfinite(e["value"]) for e in hessian)
    assert events(tmp_path / "run", "warning") == []
    assert events(tmp_path / "run", "end")[0]["status"] == "finished"


def test_an_epoch_scheduler_under_a_pytorch_lightning_trainer(tmp_path: Path) -> None:
    """The callback class (on whichever Lightning was imported first) in the other package's Trainer."""
    pl = require("pytorch_lightning")
    module = recorded_module(pl.LightningModule, interval="epoch", lr=0.2)
    trainer = quiet_trainer(pl, max_epochs=3, callbacks=[LrtuiCallback(tmp_path / "run", system_stats=False)])
    trainer.fit(module, DataLoader(data(), batch_size=BATCH))
    steps = check_steps_against_the_framework(module, tmp_path / "run")
    assert len(steps) == trainer.global_step == 15
    assert [e["lr"][0] for e in steps] == pytest.approx([0.2 * 0.5 ** (k // 5) for k in range(15)])


def test_16_mixed_precision_gives_the_probe_lightnings_grad_scaler(tmp_path: Path, capsys: Any) -> None:
    """Steps Lightning's GradScaler skipped (inf gradients) are logged as skipped, not as divergence.

    Lightning refuses ``precision="16-mixed"`` on the CPU, so the test gives its precision plugin
    a CPU GradScaler itself; the callback is not told about it.
    """
    from lightning.pytorch.plugins.precision import MixedPrecision

    from lrtui.cli import main

    module = recorded_module(L.LightningModule, lr=0.05)
    overflow = {2, 5}  # the optimizer steps whose gradients a hook makes infinite
    for p in module.parameters():
        p.register_hook(lambda g: g * math.inf if len(module.steps) in overflow else g)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))
    trainer = quiet_trainer(L, max_epochs=2, plugins=[plugin], callbacks=[LrtuiCallback(tmp_path / "run", system_stats=False)])
    trainer.fit(module, DataLoader(data(), batch_size=BATCH))

    steps = events(tmp_path / "run", "step")
    skipped = [e["step"] for e in steps if e.get("skipped")]
    assert len(skipped) == 2, steps
    assert all(math.isfinite(e["loss"]) for e in steps)
    assert main(["advise", "--json", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["diverged_at_step"] is None


def test_a_fit_resumed_from_a_checkpoint_continues_the_run(tmp_path: Path) -> None:
    """``fit(ckpt_path=...)`` continues the run in the same directory, its steps numbered on."""
    from lrtui.runlog import load_run

    first = quiet_trainer(L, max_epochs=1, callbacks=[LrtuiCallback(tmp_path / "run", system_stats=False)])
    first.fit(recorded_module(L.LightningModule), DataLoader(data(), batch_size=BATCH))
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    run_id = json.loads((tmp_path / "run" / "meta.json").read_text())["run_id"]

    callback = LrtuiCallback(tmp_path / "run", system_stats=False)
    second = quiet_trainer(L, max_epochs=2, callbacks=[callback])
    second.fit(recorded_module(L.LightningModule), DataLoader(data(), batch_size=BATCH), ckpt_path=tmp_path / "epoch1.ckpt")

    assert callback.probe is not None and callback.probe.run_dir == tmp_path / "run"  # no sibling
    assert not (tmp_path / "run-2").exists()
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["run_id"] == run_id
    assert [e["step"] for e in events(tmp_path / "run", "resume")] == [5]
    assert [e["step"] for e in events(tmp_path / "run", "step")] == list(range(10)) == list(load_run(tmp_path / "run").table("step")["step"])


def test_a_failing_fit_ends_the_run_as_failed(tmp_path: Path) -> None:
    module = recorded_module(L.LightningModule, fail_at=3)
    trainer = quiet_trainer(L, max_epochs=1, callbacks=[LrtuiCallback(tmp_path / "run", system_stats=False)])
    with pytest.raises(RuntimeError, match="the data went bad"):
        trainer.fit(module, DataLoader(data(), batch_size=BATCH))
    assert len(events(tmp_path / "run", "step")) == 3
    end = events(tmp_path / "run", "end")
    assert end[0]["status"] == "failed" and end[0]["exception"] == "RuntimeError"


def test_a_probe_argument_it_refuses_leaves_the_fit_running(tmp_path: Path, capfd: Any) -> None:
    module = recorded_module(L.LightningModule)
    callback = LrtuiCallback(tmp_path / "run", scale_invariant=[True, False, True], system_stats=False)
    trainer = quiet_trainer(L, max_epochs=1, callbacks=[callback])
    trainer.fit(module, DataLoader(data(), batch_size=BATCH))
    assert trainer.global_step == 5 and callback.probe is None and not (tmp_path / "run").exists()
    assert "lrtui probe: probe disabled (ValueError: scale_invariant has 3 flags for 1 param groups); training continues" in capfd.readouterr().err


def test_an_unknown_probe_keyword_is_refused_when_the_callback_is_made(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown Probe keyword 'sharpnes_budget'"):
        LrtuiCallback(tmp_path / "run", sharpnes_budget=0.1)
    with pytest.raises(TypeError, match="'optimizer' comes from the trainer"):
        LrtuiCallback(tmp_path / "run", optimizer=None)


ONLY_PYTORCH_LIGHTNING = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    class NoLightning:
        # A machine with pytorch_lightning and without the newer ``lightning`` package.
        def find_spec(self, name, path=None, target=None):
            if name == "lightning" or name.startswith("lightning."):
                raise ImportError(f"no {name} here")
            return None

    sys.meta_path.insert(0, NoLightning())
    import torch
    from probes.integrations.lightning import LrtuiCallback
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.set_num_threads(1)
    x = torch.randn(25, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=5)
    callback = LrtuiCallback(Path(sys.argv[1]), system_stats=False)
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[callback], accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), loader)
    print(json.dumps({"is_callback": isinstance(callback, pl.Callback), "steps": trainer.global_step,
                      "lightning": [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]}))
    """
)


def test_with_only_pytorch_lightning_installed(tmp_path: Path) -> None:
    require("pytorch_lightning")
    done = subprocess.run(
        [sys.executable, "-c", ONLY_PYTORCH_LIGHTNING, str(tmp_path / "run")], capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"is_callback": True, "steps": 3, "lightning": []}
    assert [e["step"] for e in events(tmp_path / "run", "step")] == [0, 1, 2]
