"""Read an untrusted run with every reader under a Python audit hook; print what they touched as JSON.

Run as ``python untrusted_reader.py RUN_DIR``. Every reader first reads a clean run (so libraries
finish their lazy imports); then an audit hook
records code execution (exec, compile), unpickling, imports, process starts and every file opened,
while the loader, the follower, the advisor and the real app (headless, replay then watch) read
the run. The app's sockets are listed while it runs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from lrtui.advisor import Advisor
from lrtui.app import LrtuiApp
from lrtui.runlog import RunFollower, RunWriter, find_runs, load_run

WATCHED = {"exec", "compile", "pickle.find_class", "import", "os.system", "subprocess.Popen",
           "os.exec", "os.posix_spawn", "os.fork", "ctypes.dlopen", "marshal.loads", "open"}


async def drive_app(run_dir: Path, mode: str, sockets: list[Any]) -> None:
    app = LrtuiApp(run_dir, mode, refresh=0.1, system_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.8)
        await pilot.press("l", "s", "o", "right", "end", "home", "d", "question_mark")
        await pilot.pause(0.3)
        # inet sockets of any kind, and any bound or listening socket (the event loop's own
        # unnamed socket pair is neither).
        sockets.extend(str(c) for c in psutil.Process().net_connections(kind="all")
                       if c.family != socket.AF_UNIX or c.laddr or c.status == psutil.CONN_LISTEN)


def read_everything(run_dir: Path, sockets: list[Any]) -> None:
    run = load_run(run_dir)
    Advisor.from_run(run).state()
    with RunFollower(run_dir, use_inotify=True) as follower:
        follower.read_new()
    find_runs(run_dir.parent)
    asyncio.run(drive_app(run_dir, "replay", sockets))
    asyncio.run(drive_app(run_dir, "watch", sockets))


def main() -> None:
    run_dir = Path(sys.argv[1])
    events: list[tuple[str, str]] = []
    # A clean run first, so the libraries' own lazy imports are done before the hook watches.
    with tempfile.TemporaryDirectory() as clean:
        writer = RunWriter(Path(clean) / "run", {"name": "clean"})
        for step in range(50):
            writer.write("step", step, loss=1.0 / (step + 1), lr=[0.1])
        writer.write("metric", 49, test_acc=0.5)
        writer.close()
        read_everything(Path(clean) / "run", [])

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in WATCHED:
            detail = str(args[0]) if args else ""
            if event == "open" and not detail.startswith(str(run_dir)):
                return  # only files of the run are of interest
            events.append((event, detail[:200]))

    sys.addaudithook(hook)
    sockets: list[Any] = []
    read_everything(run_dir, sockets)
    print(json.dumps({"events": events, "sockets": sockets}), flush=True)


if __name__ == "__main__":
    main()
