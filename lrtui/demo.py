"""`lrtui demo`: a short live CPU training in a child process, watched in the app (or replayed)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lrtui.errors import UserError
from lrtui.runlog import find_runs

#: The repository root (holds probes/ and sample_runs/ next to the lrtui package).
REPO_ROOT = Path(__file__).resolve().parent.parent


def demo_main(args: argparse.Namespace) -> int:
    """Start the demo training (or replay the sample sweep with ``--replay``); return an exit code."""
    if args.replay:
        return _replay()
    run_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lrtui-demo-")) / "demo"
    if (run_dir / "meta.json").exists():
        raise UserError(f"{run_dir}: already holds a run; pick another --dir")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = tempfile.TemporaryFile()
    child = subprocess.Popen(
        [sys.executable, "-m", "probes.demo_training", str(run_dir), "--steps", str(args.steps)],
        cwd=str(REPO_ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        if args.no_app:
            code = _wait_printing(child, run_dir)
        else:
            _wait_for_run(child, run_dir)
            from lrtui.app import watch_main

            watch_main(argparse.Namespace(path=str(run_dir), poll=False, refresh=0.5))
            code = None
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode not in (0, -15) or (code is not None and code != 0):
        raise UserError(f"the demo training failed (exit {child.returncode}): {_last_line(log)}")
    print(f"lrtui demo: the run is in {run_dir}")
    return 0


def _wait_for_run(child: subprocess.Popen, run_dir: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "meta.json").exists():
        if child.poll() is not None or time.monotonic() > deadline:
            return  # the caller reports the child's failure in one line
        time.sleep(0.2)


def _wait_printing(child: subprocess.Popen, run_dir: Path) -> int:
    """Without the app: print progress lines until the training ends."""
    from lrtui.runlog import load_run

    print(f"lrtui demo: training in {run_dir}", flush=True)
    while child.poll() is None:
        time.sleep(2.0)
        if (run_dir / "meta.json").exists():
            steps = load_run(run_dir).table("step")
            if steps:
                print(f"  step {int(steps['step'][-1])}  loss {float(steps['loss'][-1]):.4g}", flush=True)
    return child.returncode


def _last_line(log: object) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]  # type: ignore[attr-defined]
    return lines[-1] if lines else "no output"


def _replay() -> int:
    sweep = REPO_ROOT / "sample_runs" / "sweep"
    if not find_runs(sweep):
        raise UserError(f"{sweep}: no recorded sample runs here")
    from lrtui.app import replay_main

    return replay_main(argparse.Namespace(path=str(sweep), speed=1.0, refresh=0.5))
