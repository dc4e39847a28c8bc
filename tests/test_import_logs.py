"""``lrtui import tensorboard|csv``: logs written by TensorBoard's own writers and a CSV log become runs
that the reader and ``lrtui advise`` take; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app_support import headless
from lrtui.cli import main
from lrtui.runlog import find_runs, load_run

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120


def _loss(step: int) -> float:
    return 2.0 * math.exp(-step / 30) + 0.3 + 0.05 * math.sin(step)


def _lr(step: int, group: int = 0) -> float:
    return (1e-3 if group == 0 else 1e-4) * (1 - step / STEPS)


def _write_with_torch_summary_writer(logdir: Path) -> None:
    """A run as Lightning's TensorBoardLogger and LearningRateMonitor (two param groups) log it."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for step in range(STEPS):
        writer.add_scalar("train_loss_step", _loss(step), step)
        writer.add_scalar("lr-AdamW/pg1", _lr(step, 0), step)
        writer.add_scalar("lr-AdamW/pg2", _lr(step, 1), step)
        writer.add_scalar("grad_2.0_norm_total", 1.0 + step / 100, step)
        if step % 40 == 39:
            writer.add_scalar("val_acc", 0.5 + step / 400, step)
            writer.add_scalar("epoch", step // 40, step)
    writer.close()


def _events(run: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["kind"] == kind]


def _lrtui(*args: str, env: dict | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The real command in a child process (``prelude`` runs first, e.g. to hide a package)."""
    code = prelude + "\nimport sys\nfrom lrtui.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _one_line_error(done: subprocess.CompletedProcess[str] | tuple[int, str], *needles: str) -> None:
    status, err = (done.returncode, done.stderr) if isinstance(done, subprocess.CompletedProcess) else done
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrtui: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_tensorboard_summary_writer_log_becomes_a_run_the_advisor_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_with_torch_summary_writer(tmp_path / "tb")
    assert main(["import", "tensorboard", str(tmp_path / "tb"), str(tmp_path / "run")]) == 0
    said = capsys.readouterr().out
    assert "loss <- 'train_loss_step'" in said and "lr <- 'lr-AdamW/pg1'" in said and "lr <- 'lr-AdamW/pg2'" in said

    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == list(range(STEPS))
    for e in steps:
        assert math.isclose(e["loss"], _loss(e["step"]), rel_tol=1e-6)  # float32 in the event file
        assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(e["lr"], (_lr(e["step"], 0), _lr(e["step"], 1))))
        assert math.isclose(e["grad_norm"], 1.0 + e["step"] / 100, rel_tol=1e-6)
        assert e["time"] > 1e9  # TensorBoard's wall time
    metrics = _events(tmp_path / "run", "metric")
    assert [(m["step"], round(m["val_acc"], 4)) for m in metrics] == [(39, 0.5975), (79, 0.6975), (119, 0.7975)]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["extra"]["imported_from"] == "tensorboard" and meta["extra"]["optimizer_class"] == "AdamW"
    assert meta["extra"]["scalars"]["val_acc"] == "val_acc"

    run = load_run(tmp_path / "run")  # the reader the app and advise use
    assert run.status() == "finished" and len(run.table("step")["loss"]) == STEPS
    assert main(["advise", "--json", str(tmp_path / "run")]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["step"] == STEPS - 1 and verdict["diverged_at_step"] is None


def test_tensorboard_own_writer_and_a_logdir_of_several_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tensorboard.summary import Writer  # TensorBoard's own writer, not torch's

    for name, scale in (("lr_0.1", 1.0), ("lr_0.3", 3.0)):
        writer = Writer(str(tmp_path / "logs" / name))
        for step in range(50):
            writer.add_scalar("Loss/train", scale / (1 + step), step=step)
            writer.add_scalar("learning_rate", 0.1 * scale, step=step)
        writer.close()
    assert main(["import", "tensorboard", str(tmp_path / "logs"), str(tmp_path / "sweep"),
                 "--map", "Loss/train=loss"]) == 0
    capsys.readouterr()
    runs = find_runs(tmp_path / "sweep")
    assert [r.name for r in runs] == ["lr_0.1", "lr_0.3"]
    for run, scale in zip(runs, (1.0, 3.0)):
        steps = _events(run, "step")
        assert len(steps) == 50 and math.isclose(steps[9]["loss"], scale / 10, rel_tol=1e-6)
        assert steps[0]["lr"] == [pytest.approx(0.1 * scale)]
    assert main(["advise", "--json", str(tmp_path / "sweep")]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 2


def test_the_tensorboard_import_runs_without_torch(tmp_path: Path) -> None:
    _write_with_torch_summary_writer(tmp_path / "tb")
    blocker = textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("no torch here")
        sys.meta_path.insert(0, NoTorch())
        import atexit
        atexit.register(lambda: print("torch loaded" if "torch" in sys.modules else "no torch", file=sys.stderr))
    """)
    done = _lrtui("import", "tensorboard", str(tmp_path / "tb"), str(tmp_path / "run"), prelude=blocker)
    assert done.returncode == 0 and done.stderr.strip() == "no torch", done.stderr
    assert len(_events(tmp_path / "run", "step")) == STEPS


def test_without_the_tensorboard_extra_it_says_what_to_install(tmp_path: Path) -> None:
    _write_with_torch_summary_writer(tmp_path / "tb")
    hide = "import sys; sys.modules['tensorboard'] = None  # as if lrtui[tensorboard] were not installed"
    done = _lrtui("import", "tensorboard", str(tmp_path / "tb"), str(tmp_path / "run"), prelude=hide)
    _one_line_error(done, "pip install 'lrtui[tensorboard]'")
    assert not (tmp_path / "run").exists()


LIGHTNING_CSV = """\
epoch,step,train_loss,lr-SGD,val_acc,val_loss
0,0,2.31,0.1,,
0,1,2.20,0.1,,
0,2,2.05,0.1,,
0,3,1.98,0.1,,
0,3,,,0.42,1.90
1,4,1.91,0.05,,
1,5,1.83,0.05,,
1,6,1.80,0.05,,
1,7,1.79,0.05,,
1,7,,,0.55,1.71
"""


def test_a_lightning_metrics_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.csv").write_text(LIGHTNING_CSV)
    assert main(["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "run")]) == 0
    capsys.readouterr()
    steps = _events(tmp_path / "run", "step")
    assert [(e["step"], e["loss"], e["lr"]) for e in steps] == [
        (0, 2.31, [0.1]), (1, 2.2, [0.1]), (2, 2.05, [0.1]), (3, 1.98, [0.1]),
        (4, 1.91, [0.05]), (5, 1.83, [0.05]), (6, 1.8, [0.05]), (7, 1.79, [0.05]),
    ]
    metrics = _events(tmp_path / "run", "metric")
    assert [(m["step"], m["val_acc"], m["val_loss"]) for m in metrics] == [(3, 0.42, 1.9), (7, 0.55, 1.71)]
    assert all("epoch" not in m for m in metrics)


def test_a_csv_with_names_of_its_own_and_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["iteration;Objective;LR (group 0);top1;phase"]
    for k in range(200):
        rows.append(f"{10 * k};{1.5 * 0.99 ** k + 0.2:.6f};0.05;{'' if k % 50 != 49 else 0.9};pretrain")
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    # Without --map nothing is a loss: one line that lists what there is.
    assert main(["import", "csv", str(tmp_path / "log.csv"), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no scalar is a loss" in err and "Objective" in err and "--map NAME=loss" in err
    assert not (tmp_path / "run").exists()
    assert main(["import", "csv", str(tmp_path / "log.csv"), str(tmp_path / "run"), "--map", "Objective=loss",
                 "--map", "LR (group 0)=lr", "--map", "top1=test_acc"]) == 0
    out = capsys.readouterr().out
    assert "left out columns that hold text: phase" in out
    steps = _events(tmp_path / "run", "step")
    assert [e["step"] for e in steps] == [10 * k for k in range(200)]  # the iteration column
    assert steps[-1]["loss"] == pytest.approx(1.5 * 0.99 ** 199 + 0.2, abs=1e-6) and steps[-1]["lr"] == [0.05]
    assert [m["test_acc"] for m in _events(tmp_path / "run", "metric")] == [0.9] * 4
    assert main(["advise", str(tmp_path / "run")]) == 0
    assert "step 1990" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2_and_nothing_is_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.csv").write_text(LIGHTNING_CSV)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01" * 100)
    (tmp_path / "blank.csv").write_text("")
    (tmp_path / "badstep.csv").write_text("step,loss\n0,1.0\nseven,0.9\n")
    cases = [
        (["import", "tensorboard", str(tmp_path / "nope"), str(tmp_path / "r")], ("no such directory",)),
        (["import", "tensorboard", str(tmp_path / "empty"), str(tmp_path / "r")], ("no TensorBoard event files",)),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(existing)], ("not empty; refusing to overwrite",)),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "metrics.csv")], ("not a directory",)),
        (["import", "csv", str(tmp_path / "missing.csv"), str(tmp_path / "r")], ("no such file",)),
        (["import", "csv", str(tmp_path / "binary.csv"), str(tmp_path / "r")], ("not a",)),
        (["import", "csv", str(tmp_path / "blank.csv"), str(tmp_path / "r")], ("no header",)),
        (["import", "csv", str(tmp_path / "badstep.csv"), str(tmp_path / "r")], ("badstep.csv:3", "not a number")),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "r"), "--map", "loss"], ("expected NAME=FIELD",)),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "r"), "--map", "nothere=loss"], ("'nothere'", "train_loss")),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "r"), "--map", "val_acc=step"], ("reserved",)),
        (["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "r"), "--step-column", "iters"], ("no column 'iters'",)),
        (["import", "parquet", str(tmp_path / "metrics.csv"), str(tmp_path / "r")], ("invalid choice",)),
    ]
    for argv, needles in cases:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own errors exit through the parser
            status = int(exc.code or 0)
        _one_line_error((status, capsys.readouterr().err), *needles)
        assert not (tmp_path / "r").exists(), argv
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"] and (existing / "keep.txt").read_text() == "mine"
    # An empty directory is not a run: importing into it is fine.
    assert main(["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "empty")]) == 0
    assert len(_events(tmp_path / "empty", "step")) == 8


@headless
async def test_the_app_replays_an_imported_run(tmp_path: Path) -> None:
    from app_support import screen_text, wait_for
    from lrtui.app import LrtuiApp

    (tmp_path / "metrics.csv").write_text(LIGHTNING_CSV)
    assert main(["import", "csv", str(tmp_path / "metrics.csv"), str(tmp_path / "imported")]) == 0
    app = LrtuiApp(tmp_path / "imported", "replay", clock=lambda: 1_795_840_100.0, autoplay=False,
                   system_interval=0, refresh=0.05, start_at_end=True)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view is not None and app.view.state is not None and app.view.state.step == 7,
                       what="the imported run to load to its last step")
        app.redraw()
        await pilot.pause()
        assert "imported" in screen_text(app)


def test_name_mapping_rules() -> None:
    from lrtui.importers.names import assign

    # HF Trainer's TensorBoard names; the first common name present wins a field.
    plan = assign(["train/loss", "loss", "train/learning_rate", "train/grad_norm", "eval/accuracy", "eval/loss"], {})
    assert plan["loss"] == ("loss", 0) and plan["train/loss"] == ("train/loss", 0)
    assert plan["train/learning_rate"] == ("lr", 0) and plan["train/grad_norm"] == ("grad_norm", 0)
    assert plan["eval/accuracy"] == ("eval/accuracy", 0)  # a metric; "acc" in it makes it an accuracy
    # Lightning's LR monitor: one LR per param group in group order; its momentum is not an LR.
    plan = assign(["lr-Adam/pg2", "lr-Adam/pg1", "lr-Adam-momentum/pg1", "train_loss", "kind"], {})
    assert (plan["lr-Adam/pg1"], plan["lr-Adam/pg2"]) == (("lr", 0), ("lr", 1))
    assert plan["lr-Adam-momentum/pg1"][0] == "lr-Adam-momentum/pg1" and plan["kind"] == ("kind_", 0)
    # --map wins, several LRs in the order given, and skip leaves a scalar out.
    plan = assign(["a", "b", "loss", "lr"], {"b": "lr", "a": "lr", "loss": "skip"})
    assert plan == {"a": ("lr", 1), "b": ("lr", 0), "loss": ("skip", 0), "lr": ("lr_", 0)}  # "lr" is now a metric
