"""Readers of a resumed run, on runs written by the real probe (``Probe(..., resume=True, start_step=K)``):
the loader, the follower, ``lrtui advise`` (once and ``--follow``), the live advisor, and the app's
replay and watch curves. docs/run-format.md: a ``resume`` event with step K replaces every earlier
step/sharpness/activations/metric/overhead/action event at a step >= K; an end record before a
resume does not end the run; only the last end record counts. A run with no end record is
``running`` while a live process holds its lock, else ``crashed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrtui.app.live import LiveSource
from lrtui.app.recorded import load_into
from lrtui.app.runview import RunView
from lrtui.runlog import RunData, RunFollower, load_run

sys.path.insert(0, str(Path(__file__).parent / "reliability"))

SCRIPT = Path(__file__).parent / "reliability" / "resumed_training.py"
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: Longest a wait for the training process may take before the test fails (liveness, not speed).
LIVENESS_SECONDS = 120.0
FIRST, K, SECOND = 10, 4, 8  # the first process logs steps 0-9; the second resumes at 4 and logs 4-11


def _train(run: Path, steps: int, *flags: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(run), str(steps), *flags], capture_output=True,
                          text=True, timeout=LIVENESS_SECONDS, env=ENV, cwd=ROOT)
    assert done.returncode in (0, -9), done.stderr
    return done


def _raw(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_bytes().splitlines() if line.strip()]


def _advise(run: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lrtui.cli", "advise", str(run), *flags], capture_output=True,
                          text=True, timeout=LIVENESS_SECONDS, env=ENV)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: Any) -> Path:
    """Steps 0-9 (tag ``first``, closed: an end record), then resumed at 4: steps 4-11 (``second``)."""
    run = tmp_path_factory.mktemp("resumed") / "run"
    _train(run, FIRST)
    _train(run, SECOND, "--resume", "--start-step", str(K), "--tag", "second")
    kinds = [e["kind"] for e in _raw(run)]
    assert kinds.count("end") == 2 and kinds.count("resume") == 1  # what the readers must sort out
    return run


def _second_losses(run: Path) -> dict[int, float]:
    events = _raw(run)
    after = next(i for i, e in enumerate(events) if e["kind"] == "resume")
    return {e["step"]: e["loss"] for e in events[after:] if e["kind"] == "step"}


def _check_resumed(data: RunData, run: Path) -> None:
    steps = data.table("step")["step"]
    assert steps.tolist() == list(range(K + SECOND)), steps
    second = _second_losses(run)
    loss = data.table("step")["loss"]
    assert [loss[s] for s in range(K, K + SECOND)] == [second[s] for s in range(K, K + SECOND)]
    tags = [(m["step"], m["tag"]) for m in data.records["metric"]]
    assert tags == [(s, "first") for s in range(K)] + [(s, "second") for s in range(K, K + SECOND)]
    assert data.table("metric")["step"].tolist() == list(range(K + SECOND))
    assert [e["status"] for e in data.records["end"]] == ["finished"] and len(data.table("end")["step"]) == 1
    assert data.last_step == K + SECOND - 1


def test_load_run_lets_the_resumed_steps_replace_the_earlier_ones(resumed: Path) -> None:
    run = load_run(resumed)
    _check_resumed(run.data, resumed)
    assert run.data.resumes == [K] and run.end is not None and run.end["status"] == "finished"
    assert run.status() == "finished"
    # a projection reads the same steps
    assert load_run(resumed, step_fields=("loss",)).table("step")["step"].tolist() == list(range(K + SECOND))


def test_the_follower_hands_the_resume_over_at_the_start_of_a_batch(resumed: Path) -> None:
    data, batches = RunData(), []
    with RunFollower(resumed, use_inotify=False) as follower:
        while True:
            batch = follower.read_new()
            if batch.resume is not None:
                # what the follower handed over so far is what load_run(upto=consumed) reads
                data_then = RunData()
                data_then.extend([e for b in batches for e in b.events] + batch.events)
                upto = load_run(resumed, upto=follower.consumed).data
                assert upto.table("step")["step"].tolist() == data_then.table("step")["step"].tolist()
                assert upto.records == data_then.records
            batches.append(batch)
            data.extend(batch.events)
            if follower.caught_up:
                break
    resumes = [b for b in batches if b.resume is not None]
    assert len(resumes) == 1 and resumes[0].resume == K and resumes[0].events[0]["kind"] == "resume"
    assert all(e["kind"] != "resume" for b in batches for e in b.events[1:])
    before = batches[: batches.index(resumes[0])]
    assert [e["status"] for b in before for e in b.events if e["kind"] == "end"] == ["finished"]
    _check_resumed(data, resumed)


def test_advise_reads_the_resumed_run_once_and_following(resumed: Path) -> None:
    once = _advise(resumed, "--json")
    assert once.returncode == 0, once.stderr
    state = json.loads(once.stdout)
    assert state["logged_steps"] == K + SECOND and state["step"] == K + SECOND - 1
    assert state["status"] == "finished" and state["ended"] and state["end_status"] == "finished"
    # --follow reads the first process's end record first: it must go on to the resumed steps
    followed = _advise(resumed, "--follow", "--poll")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.startswith(f"run: step {K + SECOND - 1}, ") and "run finished" in followed.stdout, \
        followed.stdout


def test_the_live_advisor_and_the_apps_curves_of_a_resumed_run(resumed: Path) -> None:
    replayed = RunView(resumed)
    load_into(replayed, lambda: None)
    watched = RunView(resumed)
    source = LiveSource(watched, lambda message: None, use_inotify=False)
    with RunFollower(resumed, use_inotify=False) as follower:
        while True:
            batch = follower.read_new()
            source.apply(batch.events, batch.meta, batch.reset, batch.skipped, batch.resume)
            if follower.caught_up:
                break
    second = _second_losses(resumed)
    for view in (replayed, watched):
        _check_resumed(view.data, resumed)
        assert view.logged_steps().tolist() == list(range(K + SECOND))
        curves = view.curves(1)
        assert curves is not None and curves.loss.x.tolist() == list(range(K + SECOND))
        assert curves.loss.y[K:].tolist() == [second[s] for s in range(K, K + SECOND)]
        assert view.status(time.time()) == "finished"
    assert source.advisor is not None
    live = source.advisor.state()
    assert live.logged_steps == K + SECOND and live.step == K + SECOND - 1 and live.ended


def _wait_on_disk(run: Path, step: int) -> None:
    deadline = time.monotonic() + LIVENESS_SECONDS
    while not any(e["kind"] == "step" and e["step"] == step for e in _raw(run)):
        assert time.monotonic() < deadline, f"step {step} never reached the file"
        time.sleep(0.05)


def test_status_follows_the_lock_of_a_resumed_run(tmp_path: Path) -> None:
    """A finished run resumed by a live process is running (its old end record does not end it);
    killed, it is crashed (no live process holds its lock), in the loader and in advise."""
    run = tmp_path / "run"
    _train(run, FIRST)
    live = subprocess.Popen([sys.executable, str(SCRIPT), str(run), str(SECOND), "--resume", "--start-step", str(K),
                             "--tag", "second", "--stall"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=ROOT)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "waiting", live.stderr
        _wait_on_disk(run, K + SECOND - 1)
        loaded = load_run(run)
        assert loaded.end is None and loaded.status() == "running"
        assert json.loads(_advise(run, "--json").stdout)["status"] == "running"
    finally:
        live.kill()
        live.wait()
    loaded = load_run(run)
    assert loaded.end is None and loaded.status() == "crashed"
    text = _advise(run)
    assert text.returncode == 0 and "run crashed" in text.stdout, text.stdout
    assert json.loads(_advise(run, "--json").stdout)["status"] == "crashed"
    assert np.array_equal(loaded.table("step")["step"], np.arange(K + SECOND))


def test_two_resumes_in_one_block_and_a_resume_without_a_step(tmp_path: Path) -> None:
    """A hand-written log (the format is the contract): steps 0-7, an end, a resume at 5, steps
    5-6, a resume with a null step (kept, does nothing), a resume at 2, steps 2-3, an end. Read
    whole, in chunks of one line, and followed: steps 0, 1, 2, 3 with the last process's losses,
    one end record, ``resumes == [5, 2]``."""
    from runfuzz import write_meta

    run = tmp_path / "hand"
    write_meta(run)

    def step(s: int, loss: float) -> bytes:
        return b'{"kind":"step","step":%d,"time":%d,"loss":%r}\n' % (s, s, loss)

    lines = [step(s, 1.0) for s in range(8)] + [b'{"kind":"end","step":null,"time":9,"status":"failed"}\n']
    lines += [b'{"kind":"resume","step":5,"time":10,"t":10,"pid":1,"host":"h"}\n', step(5, 2.0), step(6, 2.0)]
    lines += [b'{"step":null,"kind":"resume","time":11}\n']
    lines += [b'{"time":12,"kind":"resume","step":2,"pid":2}\n', step(2, 3.0), step(3, 3.0)]
    lines += [b'{"kind":"metric","step":3,"time":13,"acc":0.9}\n', b'{"kind":"end","step":null,"time":14,"status":"finished"}\n']
    (run / "events.jsonl").write_bytes(b"".join(lines))
    whole = load_run(run).data
    by_line = RunData()
    for line in lines:
        by_line.extend_block(line)
    followed = RunData()
    with RunFollower(run, use_inotify=False) as follower:
        batches = []
        while True:
            batch = follower.read_new()
            batches.append(batch.resume)
            followed.extend(batch.events)
            if follower.caught_up:
                break
    assert [k for k in batches if k is not None] == [5, 2]
    for data in (whole, by_line, followed):
        assert data.table("step")["step"].tolist() == [0, 1, 2, 3]
        assert data.table("step")["loss"].tolist() == [1.0, 1.0, 3.0, 3.0]
        assert [e["status"] for e in data.records["end"]] == ["finished"]
        assert [m["acc"] for m in data.records["metric"]] == [0.9]
        assert data.resumes == [5, 2] and len(data.table("resume")["step"]) == 3
        assert data.last_step == 3
