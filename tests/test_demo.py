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


def test_demo_run_gets_the_advisors_equilibrium_advice_and_follows_it(tmp_path: Path) -> None:
    """What a new user should see in the first seconds: drop_lr and start_averaging, then the
    LR dropped x0.1 for the last quarter of the run."""
    import json

    run_dir = tmp_path / "demo"
    proc = subprocess.run([*LRTUI, "demo", "--no-app", "--steps", "4000", "--dir", str(run_dir)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    advice = subprocess.run([*LRTUI, "advise", str(run_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert advice.returncode == 0, advice.stderr
    state = json.loads(advice.stdout)
    # The demo follows the drop (so the advisor reports it done, not in force); the averaging
    # advice was given for the first LR and withdrawn once the LR changed.
    given = [*state["recommendations"], *state["done"], *state["withdrawn"]]
    actions = {r["action"]: r for r in given}
    assert {"drop_lr", "start_averaging"} <= set(actions), given
    done = {r["action"]: r for r in state["done"]}
    assert "drop_lr" in done and done["drop_lr"]["done_at_step"] == 3000, state["done"]
    assert done["drop_lr"]["step"] < 3000 and done["drop_lr"]["new_lr"] == state["lr"]
    # The advice came early (in the first seconds of the demo), even where the loss then fell
    # further and it was given again later.
    assert min(r["step"] for r in given if r["action"] == "drop_lr") < 1000, given
    assert "drop_lr" not in {r["action"] for r in state["recommendations"]}
    first, last = state["segments"][0], state["segments"][-1]
    assert first["regime"] == "equilibrium" and last["start_step"] == 3000
    assert len(load_run(run_dir).table("sharpness")["value"]) >= 4


def test_demo_training_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`lrtui demo` ends its child with SIGTERM when the app quits: the run closes as finished."""
    import os
    import signal
    import time

    run_dir = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-m", "probes.demo_training", str(run_dir), "--steps", "1000000"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "events.jsonl").exists() or (run_dir / "events.jsonl").stat().st_size < 10_000:
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    run = load_run(run_dir)
    assert run.status() == "finished" and run.table("step")["step"][-1] < 999_999
