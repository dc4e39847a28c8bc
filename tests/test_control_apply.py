"""``lrtui apply`` against real training processes, and its answers to bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control_support import events
from lrtui.control import COMMANDS_DIR, CONTROL_DIR
from lrtui.runlog import RunWriter
from probes.command_inbox import CommandInbox

ROOT = Path(__file__).resolve().parents[1]
TRAINING = Path(__file__).with_name("control") / "controlled_training.py"
LRTUI = [sys.executable, "-m", "lrtui"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def lrtui(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*LRTUI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def start_training(workdir: Path, *args: str) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(TRAINING), str(workdir), *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(workdir, proc)
    return proc


def wait_ready(workdir: Path, proc: subprocess.Popen, step: int | None = None) -> None:
    """Until the job waits for the test (at ``step``, when given)."""
    deadline = time.monotonic() + 300
    ready = workdir / "ready"
    while not (ready.exists() and (step is None or ready.read_text() == str(step))):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the training never got ready"
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return err


def test_apply_changes_the_running_optimizer_and_the_schedule_goes_on(tmp_path: Path) -> None:
    work = tmp_path / "job"
    proc = start_training(work, "--control", "--steps", "40", "--wait-at", "10", "20", "--scheduler", "cosine")
    done = lrtui("apply", str(work / "run"), "set_lr", "--lr", "0.02", "--wait", "60")
    wait_ready(work, proc, 20)
    refused = lrtui("apply", str(work / "run"), "set_lr", "--lr", "50", "--wait", "60")  # x5000 of 0.01
    err = finish(proc)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "refused by the run" in refused.stderr and "outside" in refused.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"{work / 'run'}: set_lr applied at step 10: lr 0.0854 -> 0.02 "
                                   "(scheduler CosineAnnealingLR rescaled)")
    assert "step 10: set_lr (command)" in err
    final = json.loads((work / "final.json").read_text())
    lrs = [v[0] for v in final["step_lrs"]]

    def cosine(t: int) -> float:  # the schedule without the change: 0.1 (1 + cos(pi t / 40)) / 2
        return 0.05 * (1 + math.cos(math.pi * t / 40))

    assert lrs[9] == pytest.approx(cosine(9)) and lrs[10] == pytest.approx(0.02)
    for t in range(10, 40):  # every later LR: the schedule's, times 0.02 / (its LR at step 10)
        assert lrs[t] == pytest.approx(cosine(t) * 0.02 / cosine(10)), t
    assert final["lrs_now"][0] == pytest.approx(cosine(40) * 0.02 / cosine(10), abs=1e-12)
    steps = {e["step"]: e for e in events(work / "run", "step")}
    assert steps[9]["lr"][0] == pytest.approx(cosine(9)) and steps[10]["lr"] == [pytest.approx(0.02)]
    (action,) = events(work / "run", "action")
    assert action["step"] == 10 and action["scheduler"] == "CosineAnnealingLR" and action["source"] == "command"


def test_a_run_without_control_refuses_in_one_line_and_keeps_its_lr(tmp_path: Path) -> None:
    work = tmp_path / "job"
    proc = start_training(work, "--steps", "12", "--wait-at", "5")
    done = lrtui("apply", str(work / "run"), "set_lr", "--lr", "0.02", "--wait", "5")
    (work / "go").write_text("")
    finish(proc)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "does not accept commands" in done.stderr
    assert "Probe(..., control=True)" in done.stderr and "Traceback" not in done.stderr
    assert all(v == [0.1] for v in json.loads((work / "final.json").read_text())["step_lrs"])
    assert not (work / "run" / CONTROL_DIR).exists()


def _live_run_that_never_looks(path: Path) -> Path:
    """A run directory that says it accepts commands and whose process (this one) is alive but
    never reads them."""
    writer = RunWriter(path, {"name": "quiet", "probe": {"control": True},
                              "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1}]}})
    writer.write("step", 0, loss=1.0, lr=[0.1])
    writer.flush()
    inbox = CommandInbox(path, None)
    inbox.open()
    inbox.close()
    return path


def test_not_confirmed_in_time_exits_4_and_stays_queued(tmp_path: Path) -> None:
    run = _live_run_that_never_looks(tmp_path / "run")
    done = lrtui("apply", str(run), "set_lr", "--factor", "0.5", "--wait", "0.3")
    assert done.returncode == 4, done.stderr
    assert "not confirmed within 0.3 s; it stays queued" in done.stderr
    queued = list((run / CONTROL_DIR / COMMANDS_DIR).iterdir())
    assert len(queued) == 1 and json.loads(queued[0].read_text())["factor"] == 0.5
    assert oct(queued[0].stat().st_mode & 0o777) == "0o600"
    done = lrtui("apply", str(run), "drop_lr", "--wait", "0")
    assert done.returncode == 4 and "drop_lr x0.1 (no drop_lr recommendation in force)" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["set_lr"], "set_lr needs --lr LR or --factor F"),
    (["set_lr", "--lr", "-0.1"], "not positive"),
    (["set_lr", "--lr", "nan"], "not finite"),
    (["set_lr", "--lr", "inf"], "not finite"),
    (["set_lr", "--lr", "abc"], "not a number"),
    (["set_lr", "--factor", "20"], "outside [0.0001, 10]"),
    (["set_lr", "--factor", "0"], "outside [0.0001, 10]"),
    (["set_lr", "--lr", "0.1", "--factor", "2"], "not allowed with"),
    (["drop_lr", "--lr", "0.1"], "drop_lr takes no --lr or --factor"),
    (["grow_lr"], "invalid choice"),
    (["set_lr", "--lr", "0.1", "--wait", "-1"], "--wait must be"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    run = _live_run_that_never_looks(tmp_path / "run")
    done = lrtui("apply", str(run), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not list((run / CONTROL_DIR / COMMANDS_DIR).iterdir())  # nothing was queued


def test_no_such_run_and_an_ended_run(tmp_path: Path) -> None:
    done = lrtui("apply", str(tmp_path / "nowhere"), "drop_lr")
    assert done.returncode == 2 and "no such run directory" in done.stderr and done.stderr.count("\n") == 1
    with RunWriter(tmp_path / "over", {"probe": {"control": True}}) as w:
        w.write("step", 0, loss=1.0, lr=[0.1])
    done = lrtui("apply", str(tmp_path / "over"), "set_lr", "--lr", "0.01")
    assert done.returncode == 2 and "the run has ended (finished)" in done.stderr


def test_drop_lr_and_start_averaging_carry_the_advisors_numbers(tmp_path: Path) -> None:
    import numpy as np

    from lrtui.advisor import Advisor
    from lrtui.runlog import load_run

    run = tmp_path / "run"
    writer = RunWriter(run, {"name": "eq", "probe": {"control": True},
                             "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.0}]}})
    rng = np.random.default_rng(0)
    for i in range(2000):  # falls, then fluctuates around a level: the advisor's equilibrium
        writer.write("step", i, loss=float(0.3 + 0.7 * np.exp(-i / 100) + 0.05 * rng.standard_normal()),
                     grad_norm=1.0, lr=[0.1])
    writer.flush()
    CommandInbox(run, None).open()
    state = Advisor.from_run(load_run(run)).state()
    drop = next(r for r in state.recommendations if r.action == "drop_lr")
    avg = next(r for r in state.recommendations if r.action == "start_averaging")
    done = lrtui("apply", str(run), "drop_lr", "--wait", "0")
    assert done.returncode == 4 and f"the advisor's recommendation of step {drop.step}" in done.stderr
    done = lrtui("apply", str(run), "start_averaging", "--wait", "0")
    assert done.returncode == 4, done.stderr
    queued = sorted((run / CONTROL_DIR / COMMANDS_DIR).iterdir())
    commands = [json.loads(p.read_text()) for p in queued]
    assert commands[0]["action"] == "drop_lr" and commands[0]["lr"] == pytest.approx(drop.numbers["new_lr"])
    assert commands[0]["recommendation_step"] == drop.step
    assert commands[1]["averaging"] == {"checkpoint_every": avg.numbers["checkpoint_every"],
                                        "ema_decay": pytest.approx(avg.numbers["ema_decay"])}
    writer.close()
