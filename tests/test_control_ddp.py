"""Control under DDP, 2 gloo processes: rank 0 reads the command, both ranks apply it at the same step."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from control_support import events

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("control") / "ddp_controlled.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _when_ready(work: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not ((work / "ready").exists() and (work / "ready").read_text() == str(step)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _apply(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrtui", "apply", *args, "--wait", "120"],
                          capture_output=True, text=True, timeout=200, env=ENV)


def test_every_rank_applies_at_the_same_step(tmp_path: Path) -> None:
    work = tmp_path / "job"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(work), str(_free_port())], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _when_ready(work, 16, proc)
    dropped = _apply(str(work / "run"), "set_lr", "--factor", "0.3")
    _when_ready(work, 32, proc)
    averaging = _apply(str(work / "run"), "start_averaging")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert dropped.returncode == 0 and "set_lr applied at step 16" in dropped.stdout, dropped.stderr
    assert averaging.returncode == 0 and "start_averaging applied at step 32" in averaging.stdout, averaging.stderr
    ranks = [json.loads((work / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["lrs"] == ranks[1]["lrs"]  # the same LR at every step on both ranks
    lrs = ranks[0]["lrs"]
    assert lrs[15] == pytest.approx(0.05) and lrs[16] == pytest.approx(0.015)  # StepLR halved at 10
    assert lrs[20] == pytest.approx(0.0075) and lrs[43] == pytest.approx(0.0075 / 4)  # it goes on from there
    assert ranks[0]["n_averaged"] == ranks[1]["n_averaged"] > 1
    assert ranks[0]["averaged"] == ranks[1]["averaged"]
    actions = events(work / "run", "action")
    assert [(a["action"], a["step"]) for a in actions] == [("set_lr", 16), ("start_averaging", 32)]
    assert actions[0]["scheduler"] == "StepLR"
    assert not (work / "run-rank1").exists() and not [e for e in events(work / "run", "warning")]
