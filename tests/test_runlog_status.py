"""Run status from the files and the writing process: finished, failed, crashed, stale, running."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from lrtui.runlog import RunWriter, find_runs, load_run, run_status

CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    from lrtui.runlog import RunWriter
    w = RunWriter(sys.argv[1], {"name": "crash"})
    for i in range(10):
        w.write("step", i, loss=1.0)
    w.flush()
    os._exit(1)  # dies without an end record, as after kill -9
""")


def test_finished_and_failed(tmp_path) -> None:
    with RunWriter(tmp_path / "ok", {"name": "ok"}) as writer:
        writer.write("step", 0, loss=1.0)
    writer = RunWriter(tmp_path / "bad", {"name": "bad"})
    writer.close("failed", ValueError("x"))
    assert load_run(tmp_path / "ok").status() == "finished"
    assert load_run(tmp_path / "bad").status() == "failed"


def test_process_gone_without_end_record_is_crashed(tmp_path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(run)])
    deadline = time.monotonic() + 30
    while not (run / "events.jsonl").exists() or len(load_run(run).table("step").get("step", [])) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    loaded = load_run(run)
    assert loaded.meta["pid"] == child.pid and loaded.end is None
    assert loaded.status() == "crashed"


def test_exited_but_unreaped_child_is_crashed(tmp_path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(run)])
    # Wait for the exit without reaping it: the child stays a zombie, which kill(pid, 0) still finds.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            if f.read().split(b") ", 1)[1][:1] == b"Z":
                break
        time.sleep(0.02)
    try:
        assert load_run(run).status() == "crashed"
    finally:
        child.wait()


def test_silent_run_is_stale_and_a_fresh_one_running(tmp_path) -> None:
    writer = RunWriter(tmp_path / "run", {"name": "live"})  # this process: alive
    writer.write("step", 0, loss=1.0)
    writer.flush()
    run = load_run(tmp_path / "run")
    last = run.data.last_time
    assert run.status(now=last + 1) == "running"
    assert run.status(now=last + 61) == "stale"
    writer.close()
    meta = {"host": "another-host", "pid": 1, "started_at": 100.0}
    assert run_status(meta, None, None, now=130.0) == "running"
    assert run_status(meta, None, None, now=161.0) == "stale"
    assert run_status(meta, {"status": "failed"}, 100.0, now=1e9) == "failed"


def test_find_runs_takes_a_run_or_a_sweep(tmp_path) -> None:
    for name in ("b", "a"):
        RunWriter(tmp_path / "sweep" / name, {"name": name}).close()
    (tmp_path / "sweep" / "not-a-run").mkdir()
    assert [p.name for p in find_runs(tmp_path / "sweep")] == ["a", "b"]
    assert find_runs(tmp_path / "sweep" / "a") == [tmp_path / "sweep" / "a"]
    assert find_runs(tmp_path / "nowhere") == []
