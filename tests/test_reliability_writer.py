"""The run writer in a hostile or failing place: planted links, a deleted run directory, a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lrtui.runlog import RunWriter, load_run

ROOT = Path(__file__).resolve().parents[1]
#: Longest a wait for something the writer does within a second may take before the test fails
#: (a liveness bound, not a speed threshold).
LIVENESS_SECONDS = 120.0


@pytest.mark.parametrize("planted", ["events.jsonl", "meta.json.tmp"])
def test_a_planted_link_is_refused_never_written_through(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the training user's own file\n")
    run = tmp_path / "shared" / "run"
    run.mkdir(parents=True)
    (run / planted).symlink_to(victim)
    messages: list[str] = []
    writer = RunWriter(run, {"name": "x"}, on_error=messages.append)
    for step in range(50):
        writer.write("step", step, loss=1.0)
    writer.close()
    assert victim.read_bytes() == b"the training user's own file\n"  # neither appended to nor truncated
    assert len(messages) == 1 and "symbolic link" in messages[0] and "refusing" in messages[0], messages
    assert (run / planted).is_symlink() and not writer.ok


def test_a_hard_link_as_the_log_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.jsonl"
    victim.write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    os.link(victim, run / "events.jsonl")
    messages: list[str] = []
    with RunWriter(run, {"name": "x"}, on_error=messages.append) as writer:
        writer.write("step", 0, loss=1.0)
    assert victim.read_bytes() == b"" and len(messages) == 1 and "hard links" in messages[0]


def test_the_probe_refuses_a_planted_link_once_and_training_goes_on(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").symlink_to(victim)  # an empty target: the directory holds no run yet
    script = textwrap.dedent(f"""
        import torch
        from probes import Probe
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        probe = Probe(model, opt, {str(run)!r}, system_stats=False)
        for _ in range(20):
            loss = model(torch.randn(8, 4)).square().mean()
            opt.zero_grad(); loss.backward(); opt.step(); probe.step(loss)
        probe.close()
        print("trained")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.strip() == "trained", done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "symbolic link" in errors[0] and "training continues" in errors[0], errors
    assert victim.read_bytes() == b""


def test_a_run_directory_deleted_mid_run_is_reported_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    messages: list[str] = []
    writer = RunWriter(run, {"name": "gone"}, on_error=messages.append)
    writer.write("step", 0, loss=1.0)
    assert writer.flush()
    for path in run.iterdir():
        path.unlink()
    run.rmdir()
    step = 1
    deadline = time.monotonic() + LIVENESS_SECONDS
    while writer.ok:  # the writer notices at its next wake; the loop is never held up
        assert time.monotonic() < deadline, "the deletion was never noticed"
        writer.write("step", step, loss=1.0)
        step += 1
        time.sleep(0.001)
    for more in range(100):
        writer.write("step", step + more, loss=1.0)
    writer.close()
    assert len(messages) == 1 and "was deleted" in messages[0] and "training continues" in messages[0], messages
    assert not run.exists()  # nothing recreated it


def _child(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_full_disk_still_gets_the_end_record(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: the log cannot grow past 6000 bytes; the finished run must not read as crashed."""
    run = tmp_path / "run"
    done = _child(f"""
        import resource, signal
        from lrtui.runlog import RunWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, resource.RLIM_INFINITY))
        w = RunWriter({str(run)!r}, {{"name": "full"}})
        for i in range(2000):
            w.write("step", i, loss=0.5, grad_norm=1.0, lr=[0.1])
        w.close()
        print("done", w.dropped)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "cannot write run log" in errors[0], errors
    assert (run / "events.jsonl").stat().st_size <= 6000
    loaded = load_run(run)
    assert loaded.status() == "finished" and loaded.skipped_lines == 0
    end = loaded.end
    assert end is not None and "File too large" in end["log_error"]
    steps = [int(s) for s in loaded.table("step")["step"]]
    assert steps == list(range(len(steps))) and steps  # a prefix, in order
    assert end["events_dropped"] == 2000 - len(steps)  # every event written or counted


def test_a_full_disk_at_the_start_leaves_no_meta_tmp(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = _child(f"""
        import resource, signal
        from lrtui.runlog import RunWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        w = RunWriter({str(run)!r}, {{"name": "full"}})
        w.write("step", 0, loss=0.5)
        w.close()
        print("done", w.ok)
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["done", "False"], done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["events.jsonl"]  # no meta.json.tmp, empty or not
    assert (run / "events.jsonl").stat().st_size == 0


def test_steps_of_a_stalled_loop_reach_the_disk_before_close(tmp_path: Path) -> None:
    """Steps handed to the probe, then a long evaluation: they are written while the loop waits,
    not only at the next step (the probe keeps them on the device in batches)."""
    torch = pytest.importorskip("torch")
    from probes import Probe

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt, tmp_path / "run", system_stats=False, sharpness_budget=0.0, flush_every=1000)
    for _ in range(5):
        loss = model(torch.randn(8, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        probe.step(loss)
    events: list[dict] = []
    deadline = time.monotonic() + LIVENESS_SECONDS
    while len([e for e in events if e["kind"] == "step"]) < 5:  # the loop "evaluates": no probe call
        assert time.monotonic() < deadline, f"the handed steps never reached the file: {events}"
        time.sleep(0.01)
        events = [json.loads(ln) for ln in (tmp_path / "run" / "events.jsonl").read_bytes().splitlines()]
    probe.close()
    assert [e["step"] for e in events if e["kind"] == "step"] == [0, 1, 2, 3, 4]
