"""`lrtui demo`: a short live CPU training in a child process, watched in the app (or replayed)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from lrtui.errors import UserError
from lrtui.runlog import find_runs

#: Where the ``probes`` package is: next to ``lrtui``, in a checkout as in an installed package.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: Recorded runs shipped inside the package for ``--replay`` (setup.py copies four runs of the
#: sample sweep there); in a checkout, ``sample_runs/sweep`` itself.
SHIPPED_SWEEP = Path(__file__).resolve().parent / "demo_runs" / "sweep"
CHECKOUT_SWEEP = PACKAGE_ROOT / "sample_runs" / "sweep"


def demo_main(args: argparse.Namespace) -> int:
    """Start the demo training (or replay the sample sweep with ``--replay``); return an exit code."""
    if args.replay:
        return _replay()
    if importlib.util.find_spec("torch") is None:
        raise UserError("the live demo trains a small model with torch, which is not installed here: "
                        "pip install 'lrtui[probe]' (or 'lrtui demo --replay' replays recorded runs without it)")
    run_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lrtui-demo-")) / "demo"
    if (run_dir / "meta.json").exists():
        raise UserError(f"{run_dir}: already holds a run; pick another --dir")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = tempfile.TemporaryFile()
    # cwd: the package's own directory, so nothing is imported from the user's working directory
    child = subprocess.Popen(
        [sys.executable, "-m", "probes.demo_training", str(run_dir), "--steps", str(args.steps)],
        cwd=str(PACKAGE_ROOT), env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        code = _wait_printing(child, run_dir) if args.no_app else _watch(child, run_dir)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode not in (0, -signal.SIGTERM) or code != 0:
        raise UserError(f"the demo training failed (exit {child.returncode}): {_last_line(log)}")
    print(f"lrtui demo: the run is in {run_dir}")
    return 0


def _watch(child: subprocess.Popen[bytes], run_dir: Path) -> int:
    """The watch app on the run from the first moment (its frame shows while torch loads in the
    child); it closes by itself if the training fails before the run exists."""
    from lrtui.app import LrtuiApp

    app = LrtuiApp(run_dir, "watch", refresh=0.5)
    done = threading.Event()

    def close_if_failed() -> None:
        child.wait()
        if child.returncode in (0, -signal.SIGTERM) or (run_dir / "meta.json").exists():
            return  # it ran: the screen shows how it ended
        while not done.is_set():  # the app may still be starting
            if app.is_running:
                try:
                    app.call_from_thread(app.exit, 1)
                except RuntimeError:  # it stopped meanwhile
                    pass
                return
            time.sleep(0.05)

    threading.Thread(target=close_if_failed, name="demo training", daemon=True).start()
    try:
        code = app.run()
    finally:
        done.set()
    return int(code or app.return_code or 0)


def _wait_printing(child: subprocess.Popen[bytes], run_dir: Path) -> int:
    """Without the app: print progress lines until the training ends."""
    from lrtui.runlog import load_run

    print(f"lrtui demo: training in {run_dir}", flush=True)
    while child.poll() is None:
        time.sleep(2.0)
        if (run_dir / "meta.json").exists():
            steps = load_run(run_dir).table("step")
            if steps:
                print(f"  step {int(steps['step'][-1])}  loss {float(steps['loss'][-1]):.4g}", flush=True)
    return 0


def _last_line(log: IO[Any]) -> str:
    log.seek(0)
    lines = [ln for ln in log.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def sample_sweep() -> Path:
    """The recorded sweep ``--replay`` plays: the package's own, or a checkout's sample_runs."""
    for sweep in (SHIPPED_SWEEP, CHECKOUT_SWEEP):
        if find_runs(sweep):
            return sweep
    raise UserError("no recorded sample runs in this installation (the package was built without them); "
                    "replay a run of your own with 'lrtui replay RUN_DIR', or reinstall lrtui from its wheel")


def _replay() -> int:
    from lrtui.app import replay_main

    return replay_main(argparse.Namespace(path=str(sample_sweep()), speed=1.0, refresh=0.5))
