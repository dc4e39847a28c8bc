"""The writer never hurts the training process: it flushes on its own, and failures never raise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from lrtui.runlog import RunWriter, load_run


def _lines(path) -> list[bytes]:
    return (path / "events.jsonl").read_bytes().splitlines()


def test_flushes_within_half_a_second_without_close(tmp_path) -> None:
    writer = RunWriter(tmp_path / "run", {"name": "f"})
    try:
        writer.write("step", 0, loss=1.0)
        start = time.monotonic()
        while not (tmp_path / "run" / "events.jsonl").read_bytes().endswith(b"\n"):
            assert time.monotonic() - start < 0.5, "event not on disk after 0.5 s"
            time.sleep(0.01)
        assert len(_lines(tmp_path / "run")) == 1
    finally:
        writer.close()


def test_unwritable_run_dir_never_raises_and_is_reported_once(tmp_path) -> None:
    (tmp_path / "file").write_text("a regular file")
    messages: list[str] = []
    writer = RunWriter(tmp_path / "file" / "run", {"name": "x"}, on_error=messages.append)
    for i in range(100):
        writer.write("step", i, loss=1.0)
    assert writer.flush() is False
    writer.close("failed", RuntimeError("boom"))
    assert not writer.ok and len(messages) == 1
    assert "cannot create run directory" in messages[0] and "training continues" in messages[0]


def test_failing_callback_does_not_raise(tmp_path) -> None:
    def broken(_message: str) -> None:
        raise RuntimeError("callback broken")

    (tmp_path / "file").write_text("")
    writer = RunWriter(tmp_path / "file" / "run", on_error=broken)
    writer.write("step", 0, loss=1.0)
    writer.close()
    assert not writer.ok


def test_full_disk_in_a_child_process_is_reported_once_and_training_goes_on(tmp_path) -> None:
    """A real file-size limit (RLIMIT_FSIZE) hits the writer mid-run; the loop still finishes."""
    script = textwrap.dedent(f"""
        import resource, sys
        from lrtui.runlog import RunWriter
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        w = RunWriter({str(tmp_path / 'run')!r}, {{"name": "full"}}, flush_interval=0.01)
        total = 0
        for i in range(3000):
            w.write("step", i, loss=0.5, grad_norm=1.0, lr=[0.1])
            total += i
        w.close()
        print("loop done", total, w.ok)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["loop", "done", str(sum(range(3000))), "False"]
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "cannot write run log" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "run" / "events.jsonl").stat().st_size <= 20000
    load_run(tmp_path / "run")  # what did get written is readable


def test_stalled_disk_drops_events_in_bounded_time(tmp_path) -> None:
    """A log that stops taking data (a FIFO nobody reads, like a hung disk) costs training at
    most one block_timeout, then events are dropped, counted and reported once."""
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "events.jsonl")
    reader = os.open(run / "events.jsonl", os.O_RDONLY | os.O_NONBLOCK)
    messages: list[str] = []
    writer = RunWriter(run, {"name": "stall"}, flush_interval=0.01, max_pending=200,
                       block_timeout=0.2, on_error=messages.append)
    try:
        start = time.monotonic()
        for i in range(20000):  # ~2.5 MB: far more than the 64 KiB the pipe holds
            writer.write("step", i, loss=0.5, grad_norm=1.0, lr=[0.1, 0.2])
        elapsed = time.monotonic() - start
        assert writer.ok and writer.dropped > 0
        assert len(messages) == 1 and "cannot keep up" in messages[0]
        assert elapsed < 3.0, f"training blocked {elapsed:.1f} s by a stalled disk"
    finally:
        drained = []

        def drain() -> None:  # the disk comes back, so close() can finish
            while True:
                try:
                    chunk = os.read(reader, 1 << 16)
                except BlockingIOError:
                    if writer._closed:
                        return
                    time.sleep(0.005)
                    continue
                if not chunk and writer._closed:
                    return
                drained.append(chunk)

        import threading
        thread = threading.Thread(target=drain)
        thread.start()
        writer.close()
        thread.join(10)
        os.close(reader)
    lines = b"".join(drained).splitlines()
    assert lines[-1].startswith(b'{"kind":"end"')
    assert str(writer.dropped).encode() in lines[-1]
    assert len(lines) - 1 + writer.dropped == 20000  # every event written or counted


def test_unencodable_event_costs_only_itself(tmp_path) -> None:
    messages: list[str] = []
    with RunWriter(tmp_path / "run", {"name": "u"}, on_error=messages.append) as writer:
        writer.write("step", 0, loss=1.0)
        writer.write("warning", 0, message="lone surrogate \ud800")  # not encodable as UTF-8
        writer.write("step", 1, loss=0.5)
        writer.write("warning", 1, message="again \udfff")
    run = load_run(tmp_path / "run")
    assert run.table("step")["step"].tolist() == [0.0, 1.0]
    assert run.end["events_dropped"] == 2 and writer.ok
    assert len(messages) == 1 and "cannot encode" in messages[0]


def test_appending_after_a_torn_line_keeps_the_new_events(tmp_path) -> None:
    run = tmp_path / "run"
    with RunWriter(run, {"name": "t"}) as writer:
        writer.write("step", 0, loss=1.0)
    with open(run / "events.jsonl", "ab") as f:
        f.write(b'{"kind":"step","step":1,"ti')  # a writer killed mid-line
    with RunWriter(run, {"name": "t"}) as writer:
        writer.write("step", 2, loss=0.5)
    loaded = load_run(run)
    assert loaded.table("step")["step"].tolist() == [0.0, 2.0]
    assert loaded.skipped_lines == 1


def test_forked_child_neither_writes_nor_hangs(tmp_path) -> None:
    writer = RunWriter(tmp_path / "run", {"name": "fork"}, max_pending=2, block_timeout=10)
    writer.write("step", 0, loss=1.0)
    pid = os.fork()
    if pid == 0:  # the child: would block 10 s per write if it waited for a thread it lacks
        try:
            for i in range(100):
                writer.write("step", 100 + i, loss=1.0)
            writer.flush()
            writer.close()
        finally:
            os._exit(0)
    start = time.monotonic()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and time.monotonic() - start < 5
    writer.close()
    assert load_run(tmp_path / "run").table("step")["step"].tolist() == [0.0]


def test_end_record_reports_failure(tmp_path) -> None:
    try:
        with RunWriter(tmp_path / "run", {"name": "e"}) as writer:
            writer.write("step", 0, loss=1.0)
            raise FloatingPointError("loss is nan")
    except FloatingPointError:
        pass
    run = load_run(tmp_path / "run")
    assert run.status() == "failed"
    assert run.end["exception"] == "FloatingPointError" and run.end["message"] == "loss is nan"
    assert _lines(tmp_path / "run")[-1].startswith(b'{"kind":"end","step":null,')
