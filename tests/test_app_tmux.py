"""`lrtui watch` in a real terminal (tmux), driven with keys and read back as a user over SSH sees it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from app_support import write_run

TMUX = shutil.which("tmux")


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TMUX or "tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)


def _screen(socket: str) -> str:
    return _tmux(socket, "capture-pane", "-p", "-t", "lrtui").stdout


def _wait_screen(socket: str, text: str, timeout: float = 30.0) -> str:
    """The screen once ``text`` is on it (a slow machine may take a few refreshes)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(socket)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_watch_in_tmux(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "lr-0.05", 300, 0.05)
    write_run(tmp_path / "sweep" / "lr-0.2", 300, 0.2, diverge_at=200, seed=1)
    socket = f"lrtui-test-{os.getpid()}"
    # A terminal's size comes from the terminal; COLUMNS/LINES left by the test runner would win.
    command = f"exec env -u COLUMNS -u LINES lrtui watch --refresh 0.2 {tmp_path / 'sweep'}"
    started = _tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "lrtui", "-x", "120", "-y", "40",
                    command)
    assert started.returncode == 0, started.stderr
    try:
        screen = _wait_screen(socket, "run 1/2")
        screen = _wait_screen(socket, "regime")
        first = screen.splitlines()[0]
        assert first.split()[:2] == ["lr-0.05", "finished"] and "step 299" in first and "run 1/2" in first
        for heading in ("loss", "gradient norm", "sharpness", "learning rate", "Advisor", "System",
                        "q quit"):
            screen = _wait_screen(socket, heading)
        assert "⣿" in screen or "⠉" in screen  # braille curves reach the terminal
        _tmux(socket, "send-keys", "-t", "lrtui", "]")
        screen = _wait_screen(socket, "DIVERGED at step 200")
        assert screen.splitlines()[0].startswith(" lr-0.2")
        _tmux(socket, "send-keys", "-t", "lrtui", "?")
        _wait_screen(socket, "play / pause")
        _tmux(socket, "send-keys", "-t", "lrtui", "Escape")
        deadline = time.monotonic() + 15
        while "play / pause" in _screen(socket):  # the help screen is gone
            assert time.monotonic() < deadline, "escape did not close the help"
            time.sleep(0.2)
        _tmux(socket, "send-keys", "-t", "lrtui", "q")
        deadline = time.monotonic() + 15
        while _tmux(socket, "has-session", "-t", "lrtui").returncode == 0:
            assert time.monotonic() < deadline, "q did not quit:\n" + _screen(socket)
            time.sleep(0.2)
    finally:
        _tmux(socket, "kill-server")


def _start(socket: str, command: str, size: tuple[int, int] = (80, 24)) -> None:
    started = _tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", "lrtui", "-x", str(size[0]),
                    "-y", str(size[1]), f"exec env -u COLUMNS -u LINES {command}")
    assert started.returncode == 0, started.stderr


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_replay_at_80x24_reads_whole(tmp_path: Path) -> None:
    """At 80x24, as over SSH: the status line and the footer are whole, every recommendation in
    force shows, and on a single run r says why it does nothing."""
    write_run(tmp_path / "sweep" / "lr-0.05", 300, 0.05)
    write_run(tmp_path / "sweep" / "lr-0.2", 300, 0.2, diverge_at=200, seed=1)
    socket, single = f"lrtui-test80-{os.getpid()}", f"lrtui-test80-single-{os.getpid()}"
    try:
        _start(socket, f"lrtui replay --refresh 0.2 {tmp_path / 'sweep'}")
        _wait_screen(socket, "regime")
        _tmux(socket, "send-keys", "-t", "lrtui", "]", "End")
        screen = _wait_screen(socket, "→ rollback")
        lines = screen.splitlines()
        assert lines[0].split()[:2] == ["lr-0.2", "replay"] and lines[0].rstrip().endswith("run 2/2"), lines[0]
        assert "→ lower lr to 0.1 @ 200" in screen  # both recommendations in force, each on its line
        assert lines[-1].rstrip().endswith("? help") and "r runs" in lines[-1] and "+/- speed" in lines[-1]
        assert "step 299 / 299" in lines[-2]
        _tmux(socket, "send-keys", "-t", "lrtui", "q")
        # The second app on a server of its own: a new session on the first one's socket can
        # reach that server while it is still shutting down ("server exited unexpectedly").
        _start(single, f"lrtui replay --refresh 0.2 {tmp_path / 'sweep' / 'lr-0.05'}")
        footer = _wait_screen(single, "regime").splitlines()[-1]
        assert "runs" not in footer and "overlay" not in footer
        _tmux(single, "send-keys", "-t", "lrtui", "r")
        # The whole message, brackets included (markup once swallowed "[ and ]").
        assert "[ and ]" in _wait_screen(single, "one run here")
    finally:
        _tmux(socket, "kill-server")
        _tmux(single, "kill-server")
