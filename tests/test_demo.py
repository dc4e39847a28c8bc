"""`lrtui demo --no-app` as a real subprocess writes a readable run with steps and sharpness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lrtui.runlog import load_run

#: The ``lrtui`` command, run from this interpreter (the package may not be on PATH).
LRTUI = [sys.executable, "-m", "lrtui"]


def test_demo_no_app_writes_a_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    proc = subprocess.run([*LRTUI, "demo", "--no-app", "--steps", "200",
                           "--dir", str(run_dir)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert str(run_dir) in proc.stdout
    run = load_run(run_dir)
    assert run.status() == "finished"
    steps = run.table("step")
    assert int(steps["step"][-1]) == 199
    assert len(run.table("sharpness").get("value", [])) >= 1


def test_demo_refuses_an_existing_run(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{}")
    proc = subprocess.run([*LRTUI, "demo", "--no-app", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
