"""A real training job with control=True in its own process, stepped by the test through files
(tests/control/controlled_training.py), and the ``lrtui`` command; no torch in the test's process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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
