"""The readers on runs that are large in an odd way, named to attack a terminal, killed, or short of
fields (issue 20, items 10-13): real files, and the real ``lrtui advise`` where it is about the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrtui.runlog import RunFollower, RunFormatError, load_run
from lrtui.runlog.data import MAX_COLUMNS

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from runfuzz import write_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRAINING = Path(__file__).parent / "reliability" / "resumed_training.py"


def _advise(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lrtui.cli", "advise", str(path), *flags], capture_output=True,
                          text=True, timeout=120, env=ENV)


def _steps(n: int) -> bytes:
    return b"".join(b'{"kind":"step","step":%d,"time":%d.5,"loss":%.4f,"lr":[0.1]}\n' % (i, i, 2.0 / (i + 1))
                    for i in range(n))


def test_thousands_of_metric_names_make_at_most_max_columns(tmp_path: Path) -> None:
    """3,000 distinct metric names (one per event): the columns stop at MAX_COLUMNS (so time and
    memory grow with events x MAX_COLUMNS, not events x names), the records keep every field, and
    advise says what was left out. Before: a column per name, quadratic in the names."""
    run, names = tmp_path / "names", 3000
    write_meta(run)
    (run / "events.jsonl").write_bytes(_steps(50) + b"".join(
        b'{"kind":"metric","step":%d,"time":%d,"m%d":0.5}\n' % (i, i, i) for i in range(names)))
    loaded = load_run(run)
    table = loaded.table("metric")
    assert len(table) == MAX_COLUMNS and list(table)[:3] == ["step", "time", "m0"]
    assert loaded.data.dropped_fields == {"metric": names - (MAX_COLUMNS - 2)}
    assert len(loaded.records("metric")) == names and loaded.records("metric")[-1][f"m{names - 1}"] == 0.5
    # the follower's way (events one batch at a time) keeps the same columns
    from lrtui.runlog import RunData

    followed = RunData()
    with RunFollower(run, use_inotify=False) as follower:
        while True:
            followed.extend(follower.read_new().events)
            if follower.caught_up:
                break
    assert list(followed.table("metric")) == list(table)
    text = _advise(run)
    assert text.returncode == 0, text.stderr
    assert f"{names - (MAX_COLUMNS - 2):,} metric field name(s) beyond the first {MAX_COLUMNS}" in text.stdout
    as_json = json.loads(_advise(run, "--json").stdout)
    assert as_json["dropped_fields"] == {"metric": names - (MAX_COLUMNS - 2)}


NASTY = "evil\x1b[2J\x1b[H\x1b]0;pwned\x07\x9b31m\rname\x00\x7f"


def test_advise_prints_no_terminal_escapes_from_a_run(tmp_path: Path) -> None:
    """A run named with escape sequences (clear screen, retitle the window, 8-bit CSI, a carriage
    return): ``advise`` prints the name without them, for one run and for a sweep; JSON escapes them."""
    sweep = tmp_path / "sweep"
    for i in range(2):
        write_meta(sweep / f"run-{i}", name=NASTY + str(i))
        (sweep / f"run-{i}" / "events.jsonl").write_bytes(_steps(30))
    for path in (sweep / "run-0", sweep):
        done = _advise(path)
        assert done.returncode == 0, done.stderr
        assert not any(c in done.stdout for c in "\x1b\x07\x9b\r\x00\x7f"), repr(done.stdout)
        assert "evil name0" in done.stdout, done.stdout
    as_json = _advise(sweep / "run-0", "--json")
    assert "\x1b" not in as_json.stdout and json.loads(as_json.stdout)["run"] == NASTY + "0"


def test_advise_counts_skipped_lines_and_says_crashed_for_a_killed_run(tmp_path: Path) -> None:
    """A real training killed with SIGKILL (no end record, its lock let go by the OS), with three
    garbage lines appended: advise says ``crashed`` and how many lines it skipped, in text and JSON."""
    run = tmp_path / "killed"
    done = subprocess.run([sys.executable, str(TRAINING), str(run), "12", "--crash"], capture_output=True,
                          text=True, timeout=120, env=ENV, cwd=ROOT)
    assert done.returncode == -9, done.stderr
    with open(run / "events.jsonl", "ab") as f:
        f.write(b"not json\n{\"kind\": 3}\n[1, 2]\n")
    text = _advise(run)
    assert text.returncode == 0, text.stderr
    assert "run crashed" in text.stdout and "skipped 3 line(s)" in text.stdout, text.stdout
    state = json.loads(_advise(run, "--json").stdout)
    assert state["status"] == "crashed" and state["skipped_lines"] == 3 and state["logged_steps"] == 12
    followed = subprocess.run([sys.executable, "-m", "lrtui.cli", "advise", str(run), "--follow", "--poll"],
                              capture_output=True, text=True, timeout=120, env=ENV)
    assert "run crashed" in followed.stdout and "skipped 3 line(s)" in followed.stdout, followed.stdout


def test_a_run_without_step_fields_a_link_loop_and_a_long_integer(tmp_path: Path) -> None:
    """Events that leave out ``step`` (valid: it may be null) still give every table a step
    column (a KeyError before); a link loop as ``events.jsonl`` is an error, not an empty run; a ``meta.json`` with a
    5,000-digit integer is read."""
    stepless = tmp_path / "stepless"
    write_meta(stepless)
    (stepless / "events.jsonl").write_bytes(b'{"kind":"metric","time":1,"acc":0.5}\n{"kind":"step","time":2}\n'
                                            b'{"kind":"end","time":3,"status":"finished"}\n')
    run = load_run(stepless)
    for kind in ("metric", "step", "end"):
        assert len(run.table(kind)["step"]) == 1
    for flags in ((), ("--json",)):
        done = _advise(stepless, *flags)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    loop = tmp_path / "loop"
    write_meta(loop)
    os.symlink("events.jsonl", loop / "events.jsonl")
    with pytest.raises(RunFormatError, match="cannot read"):
        load_run(loop)
    with pytest.raises(RunFormatError, match="cannot read"), RunFollower(loop, use_inotify=False) as follower:
        follower.read_new()
    done = _advise(loop)
    assert done.returncode == 2 and done.stderr.startswith("lrtui: ") and len(done.stderr.splitlines()) == 1
    big = tmp_path / "bigint"
    big.mkdir()
    (big / "meta.json").write_text('{"schema": "1.0", "name": "b", "pid": 1' + "0" * 5000 + "}")
    assert load_run(big).meta["pid"] == float("inf")
    assert _advise(big).returncode == 0
