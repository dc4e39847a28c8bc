"""Save the documentation's screenshots: the real ``lrtui`` in a real terminal (tmux), as SVG.

Run: ``python docs/make_screenshots.py`` from the repository root (needs tmux and the ``lrtui``
command; no torch; a few minutes). Each screenshot is ``lrtui replay`` (or ``watch``) of the
committed sample runs in a tmux window of the stated size, driven with the keys a user presses,
read back with ``tmux capture-pane`` and written as SVG by Rich. ``--only NAME`` takes one.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.terminal_theme import DEFAULT_TERMINAL_THEME, TerminalTheme
from rich.text import Text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT / "sample_runs"
#: The sweep's runs are logged every 8 steps: ``Left`` x 625 from the end (14,992) is step 9,992,
#: the last pre-training step.
TO_END_OF_PRETRAINING = ("End", *["Left"] * 625)
#: The terminal's default colours as Textual's dark theme paints them (256-colour 233 and 253), so
#: cells tmux reports in the default colour look like the ones Textual painted.
THEME = TerminalTheme((18, 18, 18), (218, 218, 218),
                      [tuple(DEFAULT_TERMINAL_THEME.ansi_colors[i]) for i in range(8)],
                      [tuple(DEFAULT_TERMINAL_THEME.ansi_colors[i]) for i in range(8, 16)])


@dataclass
class Shot:
    """One screenshot: the command, the terminal size, the keys, and what must be on screen."""

    file: str
    command: str
    keys: tuple[str, ...] = ()
    size: tuple[int, int] = (80, 24)
    ready: str = "regime"  # text that must be on screen before the keys are sent
    shows: str = ""  # text that must be on screen after them
    title: str = ""


def _shots(scratch: Path) -> list[Shot]:
    sweep, replay = SAMPLES / "sweep", "lrtui replay --refresh 0.2"
    to_lr811 = ("]",) * 5  # lr-8.11e-03 is the sweep's 6th run in LR order
    return [
        # The screenshots of docs/app.md and docs/sample-runs.md, at 160x48.
        Shot("sweep-equilibrium.svg", f"{replay} {sweep}", (*to_lr811, *TO_END_OF_PRETRAINING, "l"), (160, 48),
             shows="→ start averaging", title="lrtui replay sample_runs/sweep: lr 8.11e-3 at step 9,992, log scale"),
        Shot("sweep-overlay.svg", f"{replay} {sweep}", (*to_lr811, *TO_END_OF_PRETRAINING, "o", "l"), (160, 48),
             shows="sweep by LR", title="lrtui replay sample_runs/sweep: every LR's loss (o), log scale"),
        Shot("momentum-cnn-edge.svg", f"{replay} {SAMPLES / 'momentum-cnn'}", ("End", "l"), (160, 48),
             shows="step 1,499 / 1,499", title="lrtui replay sample_runs/momentum-cnn: end, log scale"),
        Shot("diverging.svg", f"{replay} {SAMPLES / 'diverging'}", ("End",), (160, 48),
             shows="DIVERGED", title="lrtui replay sample_runs/diverging: end"),
        # The same walk-through at 80x24, as over SSH (docs/screen-80x24.md says what each shows).
        Shot("80x24-sweep-equilibrium.svg", f"{replay} {sweep}", (*to_lr811, *TO_END_OF_PRETRAINING, "l"),
             shows="→ start averaging", title="80x24: lr 8.11e-3 at step 9,992, log scale"),
        Shot("80x24-sweep-advice.svg", f"{replay} {sweep}", (*to_lr811, *TO_END_OF_PRETRAINING, "a"),
             shows="At step 9,992", title="80x24: a, all of the advice"),
        Shot("80x24-sweep-runs.svg", f"{replay} {sweep}", (*TO_END_OF_PRETRAINING, "r"),
             shows="convergence threshold ≈", title="80x24: r, the sweep's runs by LR under its verdict"),
        Shot("80x24-sweep-overlay.svg", f"{replay} {sweep}", (*TO_END_OF_PRETRAINING, "o", "l"),
             shows="sweep by LR", title="80x24: o, every LR's loss, log scale"),
        Shot("80x24-momentum-cnn.svg", f"{replay} {SAMPLES / 'momentum-cnn'}", ("End",),
             shows="step 1,499 / 1,499", title="80x24: momentum SGD at the edge of stability, linear axes"),
        Shot("80x24-diverging.svg", f"{replay} {SAMPLES / 'diverging'}", ("End",),
             shows="DIVERGED", title="80x24: the diverging run"),
        Shot("80x24-one-run-r.svg", f"{replay} {SAMPLES / 'catapult'}", ("End", "r"),
             shows="one run here", title="80x24: r on a single run says why it does nothing"),
        Shot("80x24-lr-to-zero.svg", f"{replay} {scratch / 'cosine-to-zero'}", ("End",),
             shows="step 2,999 / 2,999", title="80x24: a cosine schedule to ~0 (synthetic): 2/lr leaves the chart"),
        Shot("80x24-action-marker.svg", f"{replay} {SAMPLES / 'autopilot'}", ("End",),
             shows="2 actions", title="80x24: the autopilot's two actions (averaging, then the drop) marked on the LR chart"),
        Shot("80x24-first-screen.svg", f"lrtui watch --refresh 0.2 {scratch / 'not-started-yet'}", (),
             ready="waiting for the run to start", title="80x24: lrtui watch before the run exists (lrtui demo's first screen)"),
    ]


def write_cosine_to_zero(run_dir: Path) -> None:
    """A synthetic SGD run whose LR follows a cosine to 1e-8 while its sharpness sits near 20."""
    import math

    from lrtui.runlog import RunWriter

    meta = {"name": run_dir.name, "started_at": 1_795_840_000.0, "host": "recorded-elsewhere", "pid": 0,
            "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.0, "params": 100}]}}
    writer = RunWriter(run_dir, meta)
    for step in range(3000):
        lr = 1e-8 + (0.1 - 1e-8) * (1 + math.cos(math.pi * step / 2999)) / 2
        t = 1_795_840_000.0 + step * 0.01
        loss = 0.05 + 2.0 * math.exp(-step / 60) + 0.01 * math.sin(step)
        writer.write_event({"kind": "step", "step": step, "time": t, "loss": loss,
                            "grad_norm": 0.5 + 2.0 * math.exp(-step / 300), "lr": [lr]})
        if step % 25 == 0:
            writer.write_event({"kind": "sharpness", "step": step, "time": t, "method": "hessian",
                                "value": 20.0 * min(1.0, 0.4 + step / 1000), "converged": True})
    writer.close()


class Tmux:
    """One tmux server of our own (its own socket), one window."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.socket = f"lrtui-shots-{os.getpid()}"
        self.size = size

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=60)

    def start(self, command: str) -> None:
        started = self("-f", "/dev/null", "new-session", "-d", "-s", "shot", "-x", str(self.size[0]),
                       "-y", str(self.size[1]), f"exec env -u COLUMNS -u LINES TERM=xterm-256color {command}")
        if started.returncode != 0:
            raise SystemExit(f"tmux: {started.stderr.strip()}")

    def screen(self, escapes: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "shot").stdout

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen and "catching up" not in screen:
                return screen
            time.sleep(0.3)
        raise SystemExit(f"{text!r} never appeared:\n{self.screen()}")

    def settle(self) -> None:
        """Until two looks a second apart see the same screen."""
        last = ""
        for _ in range(60):
            time.sleep(1.0)
            screen = self.screen()
            if screen == last:
                return
            last = screen

    def close(self) -> None:
        self("kill-server")


def take(shot: Shot) -> Path:
    tmux = Tmux(shot.size)
    try:
        tmux.start(shot.command)
        tmux.wait_for(shot.ready)
        time.sleep(0.5)
        if shot.keys:
            tmux("send-keys", "-t", "shot", *shot.keys)
        if shot.shows:
            tmux.wait_for(shot.shows)
        tmux.settle()
        captured = tmux.screen(escapes=True)
    finally:
        tmux.close()
    lines = captured.rstrip("\n").split("\n")[: shot.size[1]]
    console = Console(record=True, width=shot.size[0], file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    for line in lines:
        console.print(Text.from_ansi(line), no_wrap=True, overflow="crop")
    out = HERE / shot.file
    out.write_text(console.export_svg(title=shot.title or shot.command, theme=THEME))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="file name of one screenshot (repeatable)")
    args = parser.parse_args()
    if shutil.which("tmux") is None or shutil.which("lrtui") is None:
        print("make_screenshots: needs tmux and the lrtui command on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lrtui-shots-") as tmp:
        scratch = Path(tmp)
        write_cosine_to_zero(scratch / "cosine-to-zero")
        for shot in _shots(scratch):
            if not args.only or shot.file in args.only:
                print(f"wrote {take(shot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
