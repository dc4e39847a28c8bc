"""Following a growing run: a writer in another process, torn and garbage lines, late runs, resets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lrtui.runlog import RunFollower, RunFormatError, RunWriter
from lrtui.runlog.format import encode_event, encode_json


def _collect(follower: RunFollower, until, timeout: float = 20.0) -> list:
    """Read batches until ``until(batches)`` holds; fails after ``timeout`` seconds."""
    batches = []
    deadline = time.monotonic() + timeout
    while not until(batches):
        assert time.monotonic() < deadline, f"gave up waiting; got {batches}"
        batch = follower.read_new()
        if batch.events or batch.skipped or batch.reset or batch.meta is not None:
            batches.append(batch)
        else:
            follower.wait(0.05)
    return batches


def _events(batches) -> list[dict]:
    return [e for b in batches for e in b.events]


def _meta(name: str = "r") -> bytes:
    return encode_json({"schema": "1.0", "name": name, "started_at": time.time()})


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    from lrtui.runlog import RunWriter
    w = RunWriter(sys.argv[1], {"name": "child"}, flush_interval=0.02)
    for i in range(int(sys.argv[2])):
        w.write("step", i, loss=float("nan") if i == 7 else 1.0 / (i + 1), lr=[0.1])
        if i % 50 == 0:
            w.write("sharpness", i, method="hessian", value=float("inf") if i == 50 else 2.0)
        time.sleep(0.0005)
    w.close()
""")


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "polling"])
def test_writer_in_another_process_every_event_arrives_in_order(tmp_path, use_inotify) -> None:
    run = tmp_path / "run"
    n = 400
    follower = RunFollower(run, poll_interval=0.05, use_inotify=use_inotify)
    child = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(run), str(n)],
                             stderr=subprocess.PIPE, text=True)
    try:
        batches = _collect(follower, lambda bs: any(e["kind"] == "end" for e in _events(bs)))
    finally:
        child.wait(30)
        follower.close()
    assert child.returncode == 0, child.stderr.read()
    events = _events(batches)
    assert [e["step"] for e in events if e["kind"] == "step"] == list(range(n))
    assert [e["step"] for e in events if e["kind"] == "sharpness"] == list(range(0, n, 50))
    steps = {e["step"]: e for e in events if e["kind"] == "step"}
    assert steps[7]["loss"] != steps[7]["loss"] and steps[8]["loss"] == 1 / 9
    assert [e["value"] for e in events if e["kind"] == "sharpness"][1] == float("inf")
    assert batches[0].meta["name"] == "child" and not any(b.reset for b in batches)
    assert sum(b.skipped for b in batches) == 0
    assert follower.mode == ("inotify" if use_inotify else "polling")
    assert len(batches) > 1  # it really followed, rather than reading a finished file once


def test_followers_sharing_one_wake_event_are_woken_by_a_write_to_either(tmp_path) -> None:
    """inotify on two runs, one event to wait on (how ``advise --follow`` follows a sweep): an
    append to the second run wakes a waiter long before the (here 30 s) poll backstop."""
    wake = threading.Event()
    writers = [RunWriter(tmp_path / name, {"name": name}, flush_interval=0.01) for name in ("a", "b")]
    followers = [RunFollower(tmp_path / name, poll_interval=30.0, wake=wake) for name in ("a", "b")]
    try:
        for f in followers:
            f.read_new()  # meta seen: the inotify watch starts
        assert [f.mode for f in followers] == ["inotify", "inotify"]
        wake.clear()
        writers[1].write("step", 0, loss=1.0, lr=[0.1])
        writers[1].flush()
        assert wake.wait(10.0), "no wake-up within 10 s"
        assert [len(f.read_new().events) for f in followers] == [0, 1]
    finally:
        for f in followers:
            f.close()
        for w in writers:
            w.close()


def test_half_written_line_is_read_only_once_complete(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(_meta())
    line = encode_event({"kind": "step", "step": 0, "time": 1.0, "loss": 0.5})
    with open(run / "events.jsonl", "ab", buffering=0) as f, RunFollower(run) as follower:
        f.write(line[:20])
        first = follower.read_new()
        assert first.meta is not None and first.events == [] and first.skipped == 0
        f.write(line[20:-1])  # everything but the newline
        assert follower.read_new().events == []
        f.write(b"\n")
        assert follower.read_new().events == [{"kind": "step", "step": 0, "time": 1.0, "loss": 0.5}]


def test_garbage_lines_are_skipped_and_counted(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(_meta())
    (run / "events.jsonl").write_bytes(
        encode_event({"kind": "step", "step": 0, "time": 1.0})
        + b"garbage\n{\"kind\": 3, \"step\": 1, \"time\": 1}\n\xff\xfe\n"
        + encode_event({"kind": "step", "step": 1, "time": 2.0})
        + b"[" * (2 << 20) + b"\n"  # an over-long line
        + encode_event({"kind": "step", "step": 2, "time": 3.0})
    )
    with RunFollower(run) as follower:
        batches = _collect(follower, lambda bs: len(_events(bs)) == 3)
        assert [e["step"] for e in _events(batches)] == [0, 1, 2]
        assert sum(b.skipped for b in batches) == 4 == follower.skipped_total


def test_run_directory_that_appears_later(tmp_path) -> None:
    run = tmp_path / "later" / "run"
    with RunFollower(run, poll_interval=0.05) as follower:
        assert follower.read_new().events == [] and follower.meta is None
        with RunWriter(run, {"name": "late"}, flush_interval=0.02) as writer:
            writer.write("step", 0, loss=1.0)
            batches = _collect(follower, lambda bs: len(_events(bs)) == 1)
        assert batches[0].meta["name"] == "late"
        batches = _collect(follower, lambda bs: any(e["kind"] == "end" for e in _events(bs)))


def test_truncated_log_resets(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(_meta())
    path = run / "events.jsonl"
    path.write_bytes(b"".join(encode_event({"kind": "step", "step": i, "time": 1.0 + i}) for i in range(5)))
    with RunFollower(run) as follower:
        assert len(_collect(follower, lambda bs: len(_events(bs)) == 5)) >= 1
        with open(path, "r+b") as f:
            f.truncate(0)
        path.write_bytes(encode_event({"kind": "step", "step": 0, "time": 50.0}))
        batches = _collect(follower, lambda bs: any(b.reset for b in bs) and _events(bs))
        assert batches[0].reset and batches[0].meta is not None
        assert [e["time"] for e in _events(batches)] == [50.0]


def test_log_rewritten_past_the_read_position_resets(tmp_path) -> None:
    """Truncated and rewritten longer between two looks: the size alone would hide it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(_meta())
    path = run / "events.jsonl"
    path.write_bytes(encode_event({"kind": "step", "step": 0, "time": 1.0}))
    with RunFollower(run) as follower:
        _collect(follower, lambda bs: len(_events(bs)) == 1)
        path.write_bytes(b"".join(encode_event({"kind": "step", "step": i, "time": 100.0 + i}) for i in range(3)))
        batches = _collect(follower, lambda bs: len(_events(bs)) == 3)
        assert batches[0].reset and [e["time"] for e in _events(batches)] == [100.0, 101.0, 102.0]


def test_replaced_log_resets(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(_meta("old"))
    (run / "events.jsonl").write_bytes(encode_event({"kind": "step", "step": 0, "time": 1.0}))
    with RunFollower(run, poll_interval=0.05) as follower:
        _collect(follower, lambda bs: len(_events(bs)) == 1)
        new = tmp_path / "new.jsonl"
        new.write_bytes(b"".join(encode_event({"kind": "step", "step": i, "time": 9.0}) for i in range(4)))
        (run / "meta.json").write_bytes(_meta("new"))
        os.replace(new, run / "events.jsonl")
        batches = _collect(follower, lambda bs: len(_events(bs)) == 4)
        assert batches[0].reset and batches[0].meta["name"] == "new"
        assert [e["step"] for e in _events(batches)] == [0, 1, 2, 3]


def test_newer_schema_is_refused(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_bytes(encode_json({"schema": "2.1", "name": "future"}))
    with RunFollower(run) as follower, pytest.raises(RunFormatError, match="schema 2.1") as err:
        follower.read_new()
    assert "\n" not in str(err.value)


def test_follow_stops_when_asked(tmp_path) -> None:
    run = tmp_path / "run"
    stop = threading.Event()
    got = []
    with RunWriter(run, {"name": "f"}, flush_interval=0.02) as writer, RunFollower(run, poll_interval=0.05) as follower:
        writer.write("step", 0, loss=1.0)

        def consume() -> None:
            for batch in follower.follow(stop):
                got.extend(batch.events)

        thread = threading.Thread(target=consume)
        thread.start()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and got[0]["step"] == 0


CLOSE_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    from lrtui.runlog import RunFollower, RunWriter
    for i in range(25):
        d = tempfile.mkdtemp(dir=sys.argv[1])
        w = RunWriter(d, {"name": "x"})
        f = RunFollower(d)
        f.read_new()
        for j in range(200):  # a burst of inotify events right at close
            with open(os.path.join(d, f"junk{j}"), "w") as fh:
                fh.write("x")
        f.close()
        w.close()
    print(f.mode)
""")


def test_closing_the_follower_prints_nothing(tmp_path) -> None:
    """watchdog's stop race ("queue_events() called when the thread is inactive") stays quiet."""
    proc = subprocess.run([sys.executable, "-c", CLOSE_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "inotify"
    assert proc.stderr == ""
