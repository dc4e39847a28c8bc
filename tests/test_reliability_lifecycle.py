"""Run-directory lifecycle and the ways a run ends, with real training processes, files and signals.

Re-running a script into the same directory, two trainers started at once, resuming on purpose,
a crashed run, an exception without ``with``, SIGTERM, SIGINT, interpreter exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lrtui.runlog import load_run
from probes import run_dir

SCRIPT = Path(__file__).parent / "reliability" / "lifecycle_training.py"
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: Longest a wait for something the writer does in well under a second may take before the test
#: fails (a liveness bound, not a speed threshold).
LIVENESS_SECONDS = 120.0


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _wait_for(proc: subprocess.Popen[str], word: str) -> list[str]:
    """Lines of stdout up to and including the first that starts with ``word``."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(word):
            return lines
    raise AssertionError(f"the training ended before {word!r}: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")


def _run_dir(stdout: str | list[str]) -> Path:
    lines = stdout.splitlines() if isinstance(stdout, str) else stdout
    hexed = next(ln.split()[1] for ln in lines if ln.startswith("run_dir "))
    return Path(os.fsdecode(bytes.fromhex(hexed)))


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_bytes().splitlines() if line.strip()]


def _steps(run_dir: Path) -> list[int]:
    return [e["step"] for e in _events(run_dir) if e["kind"] == "step"]


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def test_rerunning_a_script_into_the_same_directory_starts_a_sibling(tmp_path: Path) -> None:
    run = tmp_path / "my-run"
    first = _run("close", str(run), "10")
    assert first.returncode == 0 and _errors(first.stderr) == [], first.stderr
    assert _run_dir(first.stdout) == run
    before = {name: (run / name).read_bytes() for name in ("meta.json", "events.jsonl")}
    second = _run("close", str(run), "12")
    assert second.returncode == 0, second.stderr
    assert _run_dir(second.stdout) == tmp_path / "my-run-2"
    errors = _errors(second.stderr)
    assert len(errors) == 1 and "already holds a run" in errors[0] and "my-run-2" in errors[0], errors
    assert {name: (run / name).read_bytes() for name in before} == before  # nothing of the old run changed
    assert _steps(run) == list(range(10)) and _steps(tmp_path / "my-run-2") == list(range(12))
    assert load_run(tmp_path / "my-run-2").meta["run_id"] != load_run(run).meta["run_id"]
    third = _run("close", str(run), "3")
    assert _run_dir(third.stdout) == tmp_path / "my-run-3"


def test_two_trainers_started_at_once_get_a_directory_each(tmp_path: Path) -> None:
    run, go = tmp_path / "shared", tmp_path / "go"
    procs = [_start("close", str(run), "30", "--go", str(go)) for _ in range(2)]
    go.write_text("")  # both are past their imports and wait for this file: they make the probe together
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    dirs = sorted(_run_dir(o[0]) for o in outs)
    assert dirs == [run, tmp_path / "shared-2"]
    for d in dirs:
        events = _events(d)
        assert _steps(d) == list(range(30))  # each run's own steps, once
        assert [e["status"] for e in events if e["kind"] == "end"] == ["finished"]
        assert load_run(d).meta["pid"] in {p.pid for p in procs}
    assert load_run(dirs[0]).meta["pid"] != load_run(dirs[1]).meta["pid"]


def test_resume_continues_the_run_and_a_crashed_run_blocks_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    crashed = _start("stall", str(run), "7")
    _wait_for(crashed, "waiting")
    _until_on_disk(run, 7)  # on disk although the loop stalls (the writer thread hands them over)
    crashed.kill()  # SIGKILL: no end record; the OS releases the lock
    crashed.wait()
    meta = json.loads((run / "meta.json").read_bytes())
    resumed = _run("close", str(run), "5", "--resume")
    assert resumed.returncode == 0 and _errors(resumed.stderr) == [], resumed.stderr
    assert _run_dir(resumed.stdout) == run
    events = _events(run)
    resume = [e for e in events if e["kind"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 7 and resume[0]["pid"] != crashed.pid
    assert isinstance(resume[0]["t"], float) and isinstance(resume[0]["host"], str)
    assert _steps(run) == list(range(7)) + list(range(7, 12))  # numbered on from the last logged step
    after = json.loads((run / "meta.json").read_bytes())
    assert after["run_id"] == meta["run_id"] and after["started_at"] == meta["started_at"]
    assert [r["step"] for r in after["resumed"]] == [7] and after["resumed"][0]["pid"] == resume[0]["pid"]
    assert [e["status"] for e in events if e["kind"] == "end"] == ["finished"]
    assert not (run / "meta.json.tmp").exists()
    # Restarted from an earlier checkpoint: the steps from 3 on are logged again.
    again = _run("close", str(run), "2", "--resume", "--start-step", "3")
    assert again.returncode == 0, again.stderr
    assert _steps(run)[-2:] == [3, 4] and [e["step"] for e in _events(run) if e["kind"] == "resume"] == [7, 3]
    assert [r["step"] for r in json.loads((run / "meta.json").read_bytes())["resumed"]] == [7, 3]


def test_resume_of_a_run_a_live_process_writes_goes_to_a_sibling(tmp_path: Path) -> None:
    run = tmp_path / "run"
    live = _start("stall", str(run), "3")
    try:
        _wait_for(live, "waiting")
        other = _run("close", str(run), "4", "--resume")
        assert other.returncode == 0, other.stderr
        assert _run_dir(other.stdout) == tmp_path / "run-2"
        errors = _errors(other.stderr)
        assert len(errors) == 1 and "another live process" in errors[0], errors
        assert "resume" not in {e["kind"] for e in _events(tmp_path / "run-2")}
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("mode", ["raise", "raise-with"])
def test_an_exception_writes_every_step_and_a_failed_end_record(tmp_path: Path, mode: str) -> None:
    done = _run(mode, str(tmp_path / "run"), "40")
    assert done.returncode == 1 and "ValueError: bad batch at step 39" in done.stderr  # the traceback as ever
    events = _events(tmp_path / "run")
    assert _steps(tmp_path / "run") == list(range(40))
    end = events[-1]
    assert end["kind"] == "end" and end["status"] == "failed"
    assert end["exception"] == "ValueError" and end["message"] == "bad batch at step 39"


def test_interpreter_exit_without_close_writes_the_end_record(tmp_path: Path) -> None:
    done = _run("exit", str(tmp_path / "run"), "25")
    assert done.returncode == 0 and _errors(done.stderr) == [], done.stderr
    assert _steps(tmp_path / "run") == list(range(25))
    assert _events(tmp_path / "run")[-1]["status"] == "finished"


def _until_on_disk(run_dir: Path, steps: int) -> None:
    """Wait until the writer has ``steps`` step events in the file (the bound only keeps a broken
    writer from hanging the suite: it takes a fraction of a second)."""
    deadline = time.monotonic() + LIVENESS_SECONDS
    while not (run_dir / "events.jsonl").exists() or len(_steps(run_dir)) < steps:
        assert time.monotonic() < deadline, f"{steps} steps never reached {run_dir}"
        time.sleep(0.01)


def _signalled(tmp_path: Path, mode: str, signum: int, *extra: str, settled: bool = False) -> tuple[subprocess.Popen[str], str, str]:
    proc = _start(mode, str(tmp_path / "run"), "15", *extra)
    _wait_for(proc, "waiting")
    if settled:
        _until_on_disk(tmp_path / "run", 15)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc, out, err


def test_sigterm_writes_terminated_and_the_process_still_dies_of_it(tmp_path: Path) -> None:
    proc, _, err = _signalled(tmp_path, "stall", signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM, err  # exactly as without the probe
    assert _steps(tmp_path / "run") == list(range(15))
    end = _events(tmp_path / "run")[-1]
    assert end["kind"] == "end" and end["status"] == "terminated" and end["signal"] == "SIGTERM"


def test_sigint_uncaught_ends_terminated_as_python_would(tmp_path: Path) -> None:
    plain, _, plain_err = _signalled(tmp_path / "plain", "stall", signal.SIGINT, "--no-probe")
    proc, _, err = _signalled(tmp_path, "stall", signal.SIGINT)
    assert proc.returncode == plain.returncode and "KeyboardInterrupt" in err and "KeyboardInterrupt" in plain_err
    end = _events(tmp_path / "run")[-1]
    assert end["status"] == "terminated" and end["signal"] == "SIGINT"
    assert _steps(tmp_path / "run") == list(range(15))


def test_sigint_caught_by_the_loop_leaves_the_run_open(tmp_path: Path) -> None:
    proc, out, err = _signalled(tmp_path, "catch-int", signal.SIGINT)
    assert proc.returncode == 0 and "caught" in out, err
    events = _events(tmp_path / "run")
    assert _steps(tmp_path / "run") == list(range(30))  # training went on, the probe with it
    assert [e["status"] for e in events if e["kind"] == "end"] == ["finished"]


def test_a_sigterm_handler_of_the_users_is_left_alone(tmp_path: Path) -> None:
    proc, out, err = _signalled(tmp_path, "own-term", signal.SIGTERM, settled=True)
    assert proc.returncode == 7 and "own handler" in out, err
    assert _steps(tmp_path / "run") == list(range(15))  # the writer had them on disk anyway


def test_a_run_directory_that_is_not_valid_utf8(tmp_path: Path) -> None:
    run = os.fsdecode(os.fsencode(tmp_path) + b"/run-\xff\xfe")
    done = _run("close", run, "6")
    assert done.returncode == 0 and _errors(done.stderr) == [], done.stderr
    assert _run_dir(done.stdout) == Path(run)
    assert _steps(Path(run)) == list(range(6))
    meta = json.loads((Path(run) / "meta.json").read_bytes())
    assert meta["name"] == "run-\\xff\\xfe"


def _held_lock(run: Path, mode: int) -> int:
    fd = os.open(run / "lock", os.O_RDONLY)
    fcntl.flock(fd, mode | fcntl.LOCK_NB)
    return fd


def test_a_readers_shared_lock_at_the_moment_of_a_resume_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lrtui`` may hold a shared lock on ``lock`` for an instant (``writer_alive``); a resume that
    meets it continues the run instead of going to a sibling. The reader lets go at the claim's
    first wait, so the test does not depend on timing."""
    run = tmp_path / "run"
    assert _run("close", str(run), "3").returncode == 0
    reader = _held_lock(run, fcntl.LOCK_SH)
    waits: list[float] = []

    def reader_lets_go(seconds: float) -> None:
        waits.append(seconds)
        os.close(reader)

    monkeypatch.setattr(run_dir.time, "sleep", reader_lets_go)
    claim = run_dir.claim_run_dir(run, resume=True)
    try:
        assert claim.path == run and claim.resumed and claim.start_step == 3
        assert len(waits) == 1
    finally:
        claim.release()


def test_a_writers_exclusive_lock_sends_a_resume_to_a_sibling_without_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    assert _run("close", str(run), "3").returncode == 0
    writer = _held_lock(run, fcntl.LOCK_EX)
    waits: list[float] = []
    monkeypatch.setattr(run_dir.time, "sleep", waits.append)
    try:
        claim = run_dir.claim_run_dir(run, resume=True)
        claim.release()
        assert claim.path == tmp_path / "run-2" and not claim.resumed
        assert "another live process" in (claim.note or "")
        assert waits == []  # /proc/locks lists the exclusive holder: no wait
    finally:
        os.close(writer)
