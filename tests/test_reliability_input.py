"""Bad input never crashes a reader: fuzzed and hand-made broken runs through the loader and the follower."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from runfuzz import Expected, canonical, event_logs, metas, step_series, to_json_text, write_meta  # noqa: E402

from lrtui.advisor import Advisor  # noqa: E402
from lrtui.runlog import RunFollower, RunFormatError, find_runs, load_run  # noqa: E402

#: Bounded so the whole file stays within its CI share; LRTUI_FUZZ_EXAMPLES raises it.
EXAMPLES = int(os.environ.get("LRTUI_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _expected_column(events: list[dict[str, Any]], kind: str, name: str) -> list[Any]:
    return [e.get(name) for e in events if e["kind"] == kind]


def _check_loaded(run: Any, expected: Expected) -> None:
    assert run.skipped_lines == expected.skipped, expected.lines
    assert len(run.data) == len(expected.events), expected.lines
    for kind in {e["kind"] for e in expected.events}:
        table = run.table(kind)
        steps = _expected_column(expected.events, kind, "step")
        got = table["step"]
        assert len(got) == len(steps)
        # Steps in file order, out-of-order and duplicate ones included; null steps are NaN.
        for g, s in zip(got, steps):
            if s is None:
                assert math.isnan(g)
            else:
                # the step column is float64: an integer beyond the float range reads as inf
                assert float(g) == _as_float(s)
        for name, column in table.items():
            assert len(column) == len(steps), (kind, name)
    for kind in ("warning", "end", "metric"):
        want = [canonical(e) for e in expected.events if e["kind"] == kind]
        assert [canonical(r) for r in run.records(kind)] == want


@FUZZ
@given(log=event_logs())
def test_loader_reads_every_complete_valid_line_and_counts_the_rest(tmp_path_factory: Any,
                                                                    log: tuple[bytes, Expected]) -> None:
    data, expected = log
    run_dir = tmp_path_factory.mktemp("run")
    write_meta(run_dir)
    (run_dir / "events.jsonl").write_bytes(data)
    _check_loaded(load_run(run_dir), expected)


@FUZZ
@given(log=event_logs(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_follower_sees_the_same_events_whatever_the_write_boundaries(
    tmp_path_factory: Any, log: tuple[bytes, Expected], cuts: list[int]
) -> None:
    data, expected = log
    run_dir = tmp_path_factory.mktemp("run")
    write_meta(run_dir)
    path = run_dir / "events.jsonl"
    path.write_bytes(b"")
    # The writer's bytes arrive in pieces cut anywhere: mid-line, mid-UTF-8 sequence, mid-number.
    bounds = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    events: list[dict[str, Any]] = []
    skipped = 0
    start = 0
    with RunFollower(run_dir, use_inotify=False) as follower:
        for end in bounds:
            with open(path, "ab") as f:
                f.write(data[start:end])
            start = end
            batch = follower.read_new()
            assert not batch.reset
            events.extend(batch.events)
            skipped += batch.skipped
    assert skipped == expected.skipped, expected.lines
    assert [canonical(e) for e in events] == [canonical(e) for e in expected.events], expected.lines


def _one_line_error(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "meta_bytes, needle",
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"name": "x"}', "no schema"),
        (b'{"schema": 1}', "no schema"),
        (b'{"schema": "two"}', "schema"),
        (b'{"schema": "2.0"}', "upgrade lrtui"),
        (b'{"schema": "999.1", "future": {"x": 1}}', "upgrade lrtui"),
        (b'{"schema": "1.0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "meta.json"),
        (b'{"schema": "1.0"', "not valid JSON"),
    ],
    ids=["empty", "binary", "array", "no_schema", "schema_int", "schema_word", "major_2", "major_999",
         "nested_100k_deep", "truncated"],
)
def test_broken_metadata_is_one_line_refusal(tmp_path: Path, meta_bytes: bytes, needle: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "meta.json").write_bytes(meta_bytes)
    (run_dir / "events.jsonl").write_bytes(b'{"kind":"step","step":0,"time":1}\n')
    with pytest.raises(RunFormatError) as info:
        load_run(run_dir)
    assert needle in _one_line_error(info.value)
    with RunFollower(run_dir, use_inotify=False) as follower, pytest.raises(RunFormatError) as info:
        follower.read_new()
    assert needle in _one_line_error(info.value)


def test_newer_minor_schema_is_read_and_unknown_fields_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_meta(run_dir, schema="1.9", new_field={"a": [1, 2]})
    (run_dir / "events.jsonl").write_bytes(
        b'{"kind":"hologram","step":0,"time":1,"beams":3}\n{"kind":"step","step":0,"time":1,"loss":2,"new":1}\n')
    run = load_run(run_dir)
    assert run.meta["schema"] == "1.9" and run.skipped_lines == 0
    assert list(run.table("hologram")["beams"]) == [3.0]
    assert list(run.table("step")["new"]) == [1.0]


@pytest.mark.parametrize("where", ["run_dir", "meta", "events"])
def test_a_directory_or_file_where_the_other_belongs(tmp_path: Path, where: str) -> None:
    run_dir = tmp_path / "run"
    if where == "run_dir":
        run_dir.write_text("I am a file")
    else:
        write_meta(run_dir)
        if where == "meta":
            (run_dir / "meta.json").unlink()
            (run_dir / "meta.json").mkdir()
        else:
            (run_dir / "events.jsonl").mkdir()
    with pytest.raises(RunFormatError) as info:
        load_run(run_dir)
    _one_line_error(info.value)
    with RunFollower(run_dir, use_inotify=False) as follower:
        try:
            batch = follower.read_new()
        except RunFormatError as exc:
            _one_line_error(exc)
        else:  # a follower may keep waiting for the run to become readable, but must not invent events
            assert batch.events == []


def test_empty_and_missing_event_logs(tmp_path: Path) -> None:
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    write_meta(empty)
    (empty / "events.jsonl").write_bytes(b"")
    write_meta(missing)
    for run_dir in (empty, missing):
        run = load_run(run_dir)
        assert len(run.data) == 0 and run.skipped_lines == 0
        assert run.table("step") == {}
        assert run.status() in ("running", "crashed", "stale")
        with RunFollower(run_dir, use_inotify=False) as follower:
            batch = follower.read_new()
            assert batch.events == [] and batch.skipped == 0
    assert find_runs(tmp_path) == [empty, missing]


def _line_of(size: int) -> bytes:
    return b'{"kind":"metric","step":1,"time":1,"blob":"' + b"x" * size + b'"}\n'


@pytest.mark.parametrize("final_newline", [True, False])
def test_a_100_megabyte_line_is_skipped_in_bounded_memory(tmp_path: Path, final_newline: bool) -> None:
    run_dir = tmp_path / "run"
    write_meta(run_dir)
    huge = _line_of(100 << 20)
    with open(run_dir / "events.jsonl", "wb") as f:
        f.write(b'{"kind":"step","step":0,"time":1,"loss":0.5}\n')
        f.write(huge)
        f.write(b'{"kind":"step","step":1,"time":2,"loss":0.4}\n')
        if final_newline:
            f.write(huge)
        else:  # the same line still being written: already over-long, so garbage, never an event
            f.write(huge[:-1])
    del huge
    tracemalloc.start()
    try:
        run = load_run(run_dir)
        loader_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with RunFollower(run_dir, use_inotify=False) as follower:
            seen, skipped = [], 0
            for _ in range(20):  # the follower hands over a backlog in bounded pieces
                batch = follower.read_new()
                seen += batch.events
                skipped += batch.skipped
        follower_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(run.table("step")["step"]) == [0, 1]
    assert run.skipped_lines == 2
    assert [e["step"] for e in seen] == [0, 1] and skipped == run.skipped_lines
    # Neither reader holds the line: peaks stay well below its 100 MB (reads are 8-16 MB pieces).
    assert loader_peak < 64 << 20, loader_peak
    assert follower_peak < 64 << 20, follower_peak


def test_random_binary_file_where_the_log_belongs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_meta(run_dir)
    rng = np.random.default_rng(7)
    blob = rng.integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
    (run_dir / "events.jsonl").write_bytes(blob)
    run = load_run(run_dir)
    assert len(run.data) == 0
    newlines = blob.count(b"\n")
    complete = [ln for ln in blob.split(b"\n")[:newlines] if ln.strip()]
    assert run.skipped_lines == len(complete)


# -- the advisor, `lrtui advise` and the app on the same hostile runs ------------------------------


def _write_fuzzed_run(run_dir: Path, meta: dict[str, Any], data: bytes) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(to_json_text(meta), allow_nan=False))
    (run_dir / "events.jsonl").write_bytes(data)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


@FUZZ
@given(meta=metas(), log=st.one_of(step_series().map(lambda b: (b, True)),
                                   event_logs().map(lambda log: (log[0], False))))
def test_advisor_takes_any_run(tmp_path_factory: Any, meta: dict[str, Any], log: tuple[bytes, bool]) -> None:
    data, same_fields = log
    run_dir = tmp_path_factory.mktemp("run")
    _write_fuzzed_run(run_dir, meta, data)
    run = load_run(run_dir)
    state = Advisor.from_run(run).state()  # the whole run at once (advise, replay)
    _strict_json(json.dumps(state.to_json(run.name)))  # what `advise --json` prints is strict JSON
    live = Advisor(run.meta)  # one event at a time, as the follower hands them over (watch)
    with RunFollower(run_dir, use_inotify=False) as follower:
        for _ in range(3):
            for event in follower.read_new().events:
                live.update(event)
    live.flush()
    live_state = live.state()
    # Where every step event has the same fields, reading one event at a time and reading columns
    # agree. (Columns read a field missing from some events as NaN, as the format says; one at a
    # time, a missing gradient norm is no measurement. Hostile logs may differ there, never crash.)
    if same_fields:
        assert live_state.diverged == state.diverged


def _advise(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lrtui.cli", "advise", str(path), *flags],
                          capture_output=True, text=True, timeout=120)


def _check_cli(done: subprocess.CompletedProcess[str], as_json: bool) -> None:
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode in (0, 2, 3), (done.returncode, done.stderr)
    if done.returncode == 2:
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("lrtui: "), done.stderr
    elif as_json:
        _strict_json(done.stdout)


@settings(FUZZ, max_examples=max(4, EXAMPLES // 10))
@given(runs=st.lists(st.tuples(metas(), st.one_of(step_series(), event_logs().map(lambda log: log[0]))),
                     min_size=1, max_size=4))
def test_advise_command_on_fuzzed_runs_and_sweeps(tmp_path_factory: Any,
                                                  runs: list[tuple[dict[str, Any], bytes]]) -> None:
    sweep = tmp_path_factory.mktemp("sweep")
    for i, (meta, data) in enumerate(runs):
        _write_fuzzed_run(sweep / f"run-{i}", meta, data)
    # Each command is a real process: the sweep, and one run, in both output forms.
    _check_cli(_advise(sweep, "--json"), as_json=True)
    _check_cli(_advise(sweep / "run-0"), as_json=False)
    _check_cli(_advise(sweep / "run-0", "--json"), as_json=True)


def _broken_runs(root: Path) -> dict[str, Path]:
    """Hand-made broken run directories, one per kind of damage."""
    cases: dict[str, Path] = {}

    def case(name: str) -> Path:
        cases[name] = root / name
        return cases[name]

    write_meta(case("empty_log"))
    (cases["empty_log"] / "events.jsonl").write_bytes(b"")
    write_meta(case("no_log"))
    case("no_meta").mkdir()
    (cases["no_meta"] / "events.jsonl").write_bytes(b'{"kind":"step","step":0,"time":1,"loss":1}\n')
    write_meta(case("newer_schema"), schema="2.0")
    write_meta(case("log_is_dir"))
    (cases["log_is_dir"] / "events.jsonl").mkdir()
    case("meta_is_dir").mkdir()
    (cases["meta_is_dir"] / "meta.json").mkdir()
    write_meta(case("garbage_log"))
    (cases["garbage_log"] / "events.jsonl").write_bytes(os.urandom(200_000))
    write_meta(case("nan_everywhere"))
    (cases["nan_everywhere"] / "events.jsonl").write_bytes(b"".join(
        b'{"kind":"step","step":%d,"time":%d,"loss":"NaN","grad_norm":"Infinity","lr":["-Infinity"]}\n' % (i, i)
        for i in range(300)))
    write_meta(case("huge_line"))
    with open(cases["huge_line"] / "events.jsonl", "wb") as f:
        f.write(b'{"kind":"step","step":0,"time":1,"loss":0.5,"lr":[0.1]}\n')
        f.write(_line_of(100 << 20))
        f.write(b'{"kind":"step","step":1,"time":2,"loss":0.4,"lr":[0.1]}\n')
    case("a_file").write_text("not a directory")
    return cases


def test_advise_command_on_broken_runs(tmp_path: Path) -> None:
    cases = _broken_runs(tmp_path)
    expect_refusal = {"no_meta", "newer_schema", "log_is_dir", "meta_is_dir", "a_file"}
    for name, path in cases.items():
        for flags in ((), ("--json",)):
            done = _advise(path, *flags)
            _check_cli(done, as_json=bool(flags))
            assert (done.returncode == 2) == (name in expect_refusal), (name, done.returncode, done.stderr)
    assert "upgrade lrtui" in _advise(cases["newer_schema"]).stderr
    # The whole directory of broken runs as a sweep: the readable ones are advised on.
    _check_cli(_advise(tmp_path, "--json"), as_json=True)


# -- the app on the same hostile runs: the real Textual app, headless -------------------------------

#: Keys a user presses while looking at a broken run: step, seek, switch runs, toggles, help.
APP_KEYS = ["right", "end", "home", "left", "right_square_bracket", "l", "s", "o", "question_mark",
            "escape", "left_square_bracket"]


async def _drive_app(path: Path, mode: str) -> str:
    from app_support import screen_text
    from lrtui.app import LrtuiApp

    app = LrtuiApp(path, mode, clock=lambda: 1_795_840_100.0, autoplay=False, system_interval=0,
                   refresh=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        for key in APP_KEYS:
            await pilot.press(key)
        await pilot.pause(0.2)
        text = screen_text(app)
        await pilot.press("q")
    return text


#: Each example starts the real app twice (~5 s on a slow core): a few by default, no shrinking
#: (a shrink would replay it hundreds of times); LRTUI_FUZZ_EXAMPLES raises the count.
@settings(FUZZ, max_examples=max(2, EXAMPLES // 20), phases=[Phase.explicit, Phase.generate])
@given(runs=st.lists(st.tuples(metas(), st.one_of(step_series(), event_logs().map(lambda log: log[0]))),
                     min_size=1, max_size=3))
def test_app_replays_and_watches_fuzzed_runs(tmp_path_factory: Any,
                                             runs: list[tuple[dict[str, Any], bytes]]) -> None:
    """Run.run_test re-raises any exception the app met (a crash fails the test); the screen
    still shows the status line and the keys."""
    import asyncio

    sweep = tmp_path_factory.mktemp("sweep")
    for i, (meta, data) in enumerate(runs):
        _write_fuzzed_run(sweep / f"run-{i}", meta, data)
    for path, mode in ((sweep, "replay"), (sweep / "run-0", "watch")):
        text = asyncio.run(_drive_app(path, mode))
        lines = text.splitlines()
        assert len(lines) == 30 and "quit" in lines[-1], text


def test_app_on_hand_made_broken_runs(tmp_path: Path) -> None:
    import asyncio

    cases = _broken_runs(tmp_path)
    for name in ("empty_log", "no_log", "garbage_log", "nan_everywhere", "huge_line"):
        text = asyncio.run(_drive_app(cases[name], "replay"))
        assert "quit" in text.splitlines()[-1], (name, text)


def test_advise_on_a_loss_whose_window_mean_is_zero(tmp_path: Path) -> None:
    """A log the fuzzer found (shrunk by hand to 40 lines): a linear-scale window whose mean loss
    is 0 made the advisor divide by an underflowed scale² (ZeroDivisionError: internal error)."""
    run = tmp_path / "run"
    write_meta(run)
    (run / "events.jsonl").write_bytes((Path(__file__).parent / "reliability" / "fuzz_zero_scale.jsonl").read_bytes())
    for flags in ((), ("--json",)):
        _check_cli(_advise(run, *flags), as_json=bool(flags))
