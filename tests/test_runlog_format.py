"""Round trips through the run-directory format: every event kind, non-finite values, schema checks."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from lrtui.runlog import KINDS, RunFormatError, RunWriter, load_run, read_meta
from lrtui.runlog.format import (
    SCHEMA_VERSION,
    decode_line,
    decode_lines,
    encode_event,
    encode_json,
)
from lrtui.runlog import RunData, float_column

NAN, INF = math.nan, math.inf


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN, through lists and dicts."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


#: One event of every kind of docs/run-format.md, each holding NaN, +Inf and -Inf somewhere.
EVENTS = [
    {"kind": "step", "step": 0, "time": 1.5, "loss": NAN, "grad_norm": INF, "update_norm": -INF,
     "weight_norm": 1.0, "lr": [0.1, NAN], "effective_lr": [INF, None]},
    {"kind": "sharpness", "step": 0, "time": 1.6, "method": "hessian", "value": INF, "hvps": 7,
     "seconds": 0.01, "tolerance": 1e-3, "converged": False, "warm_start": True},
    {"kind": "activations", "step": 0, "time": 1.7, "layers": ["net.1", "net.3"],
     "zero_fraction": [0.5, NAN]},
    {"kind": "metric", "step": 0, "time": 1.8, "test_acc": -INF, "test_loss": NAN, "phase": "pre"},
    {"kind": "system", "step": 0, "time": 1.9, "source": "probe", "cpu_percent": NAN, "rss": 123,
     "gpu_util": INF},
    {"kind": "overhead", "step": 0, "time": 2.0, "fraction": NAN, "probe_seconds": 0.1,
     "wall_seconds": INF, "budget": 0.05},
    {"kind": "warning", "step": 0, "time": 2.1, "source": "sharpness", "message": "value was NaN"},
    {"kind": "action", "step": 0, "time": 2.15, "action": "set_lr", "source": "command", "id": "a1",
     "lr_before": [INF], "lr_after": [NAN], "scheduler": None},
    {"kind": "resume", "step": 1, "time": 2.18, "t": 2.18, "pid": 4242, "host": "gpu-07"},
    {"kind": "end", "step": None, "time": 2.2, "status": "failed", "exception": "FloatingPointError",
     "message": "loss is -inf", "events_dropped": 0},
]


def test_every_kind_is_covered() -> None:
    assert {e["kind"] for e in EVENTS} == set(KINDS)


@pytest.mark.parametrize("event", EVENTS, ids=[e["kind"] for e in EVENTS])
def test_line_round_trip_keeps_non_finite_values(event: dict) -> None:
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert same(decode_line(line.rstrip(b"\n")), event)


def test_run_round_trip_through_files(tmp_path) -> None:
    meta = {"name": "nf", "optimizer": {"class": "SGD", "param_groups": [{"lr": INF, "momentum": NAN}]},
            "extra": {"neg": -INF, "list": [NAN, 1.0]}}
    with RunWriter(tmp_path / "run", meta) as writer:
        for event in EVENTS[:-1]:
            writer.write_event(dict(event))
    run = load_run(tmp_path / "run")
    assert run.meta["schema"] == SCHEMA_VERSION
    assert same(run.meta["optimizer"], meta["optimizer"]) and same(run.meta["extra"], meta["extra"])
    step = run.table("step")
    assert math.isnan(step["loss"][0]) and step["grad_norm"][0] == INF and step["update_norm"][0] == -INF
    assert np.isnan(step["lr"][0, 1]) and step["effective_lr"][0, 0] == INF and np.isnan(step["effective_lr"][0, 1])
    sharp = run.table("sharpness")
    assert sharp["value"][0] == INF and sharp["converged"][0] == 0.0 and list(sharp["method"]) == ["hessian"]
    assert np.isnan(run.table("activations")["zero_fraction"][0, 1])
    assert run.table("system")["gpu_util"][0] == INF and np.isnan(run.table("overhead")["fraction"][0])
    assert same(run.records("metric")[0], EVENTS[3])
    assert run.records("warning")[0]["message"] == "value was NaN"
    assert run.end["status"] == "finished" and run.status() == "finished"
    assert run.skipped_lines == 0 and run.data.count == len(EVENTS)


def test_numpy_values_are_written_as_numbers(tmp_path) -> None:
    with RunWriter(tmp_path / "run", {"name": "np", "seed": np.int64(3)}) as writer:
        writer.write("step", 0, loss=np.float32(0.5), grad_norm=np.float64("nan"),
                     lr=np.array([0.1, 0.2]), effective_lr=[np.float64("inf"), None])
    run = load_run(tmp_path / "run")
    assert run.meta["seed"] == 3
    step = run.table("step")
    assert step["loss"][0] == 0.5 and np.isnan(step["grad_norm"][0])
    assert step["lr"][0].tolist() == [0.1, 0.2] and step["effective_lr"][0, 0] == INF


def _generic(path) -> RunData:
    data = RunData()
    events, _ = decode_lines((path / "events.jsonl").read_bytes().split(b"\n")[:-1])
    data.extend(events)
    return data


def test_fast_step_path_equals_the_generic_decoder(tmp_path) -> None:
    """The loader's typed path for step lines must give exactly what the plain decoder gives."""
    rng = random.Random(1)
    specials = [NAN, INF, -INF, None, 0.25, 3]
    with RunWriter(tmp_path / "run", {"name": "mix"}) as writer:
        for i in range(3000):
            fields = {"loss": rng.choice(specials), "grad_norm": rng.random(),
                      "lr": [0.1, rng.choice(specials)], "effective_lr": [None, None]}
            if i % 7 == 0:
                del fields["grad_norm"]  # a missing field is NaN
            if i == 1500:
                fields["custom"] = "text"  # a field the schema does not know
            if i >= 2500:  # a param group added: a wider list, in blocks of finite values only
                fields.update(loss=0.5, lr=[0.1, 0.2, 0.3])
            writer.write("step", i, **fields)
            if i % 40 == 0:
                writer.write("sharpness", i, method="batch", value=rng.random(), converged=True)
    with open(tmp_path / "run" / "events.jsonl", "ab") as f:
        f.write(b'{"step":3000,"kind":"step","time":9.0,"loss":1.0}\n')  # another writer's key order
        f.write(b'{"kind":"step","step":-1,"time":9.0}\nnot json\n{"kind":"step","step":3001,"time":"x"}\n')
        f.write(b'{"kind":"step","step":3002,"time":9.5,"loss":"0.5"}\n')  # a string is not a number
    run = load_run(tmp_path / "run")
    generic = _generic(tmp_path / "run")
    assert run.skipped_lines == 3
    assert set(run.data.kinds()) == set(generic.kinds()) == {"step", "sharpness", "end"}
    for kind in generic.kinds():
        fast, slow = run.table(kind), generic.table(kind)
        assert fast.keys() == slow.keys()
        for name in fast:
            if fast[name].dtype == object:
                assert [repr(v) for v in fast[name]] == [repr(v) for v in slow[name]], name
            else:
                assert np.array_equal(fast[name], slow[name], equal_nan=True), name
    loss = run.table("step")["loss"]
    assert len(loss) == 3002 and run.table("step")["step"][-2] == 3000
    assert run.table("step")["loss"][-1] == "0.5" and run.table("step")["custom"][1500] == "text"


@pytest.mark.parametrize("values", [
    [[0.1], [0.2], [0.3]], [[0.1, 0.2], [0.3, 0.4]], [[], []], [[0.1, None], [0.2, 0.3]],
    [[0.1, "NaN"], [0.2, "-Infinity"]], [[0.1], [0.2, 0.3]], [[0.1], None], [[0.1], [10**400]], [[1], [2]],
])
def test_list_columns_take_the_fast_way_only_when_it_gives_the_generic_result(values) -> None:
    from lrtui.runlog.columns import column, list_column

    fast, generic = list_column(values), column(values)
    if fast is not None:
        assert fast.dtype == np.float64 and fast.shape == generic.shape
        assert np.array_equal(fast, generic, equal_nan=True)
    else:  # only shapes a 2-D float array cannot hold as they are
        assert any(v is None for v in values) or len({len(v) for v in values}) > 1 or 10**400 in values[1]


def test_newer_major_schema_is_refused_in_one_line(tmp_path) -> None:
    run = tmp_path / "future"
    run.mkdir()
    (run / "meta.json").write_bytes(encode_json({"schema": "2.0", "name": "future"}))
    (run / "events.jsonl").write_bytes(encode_event({"kind": "step", "step": 0, "time": 1.0}))
    for read in (load_run, read_meta):
        with pytest.raises(RunFormatError) as err:
            read(run)
        message = str(err.value)
        assert "\n" not in message and "schema 2.0" in message and "upgrade lrtui" in message
    (run / "meta.json").write_bytes(encode_json({"schema": "1.7", "name": "newer minor"}))
    assert load_run(run).table("step")["step"].tolist() == [0.0]


@pytest.mark.parametrize("content,reason", [
    (None, "no meta.json"), (b"{not json", "not valid JSON"), (b"[]", "not a JSON object"),
    (b'{"name":"x"}', "no schema version"), (b'{"schema":"x.y"}', "unreadable schema version"),
])
def test_unreadable_meta_is_one_line(tmp_path, content, reason) -> None:
    run = tmp_path / "bad"
    run.mkdir()
    if content is not None:
        (run / "meta.json").write_bytes(content)
    with pytest.raises(RunFormatError, match=reason) as err:
        load_run(run)
    assert "\n" not in str(err.value)


def test_missing_run_directory_is_one_line(tmp_path) -> None:
    with pytest.raises(RunFormatError, match="no such run directory"):
        load_run(tmp_path / "nowhere")


def test_garbage_and_over_long_lines_are_skipped_and_counted(tmp_path) -> None:
    with RunWriter(tmp_path / "run", {"name": "g"}) as writer:
        writer.write("step", 0, loss=1.0)
    with open(tmp_path / "run" / "events.jsonl", "ab") as f:
        f.write(b"\x00\xff binary\n[1,2]\n{}\n" + b'{"kind":"step","step":1,"time":1,"x":"' + b"a" * (2 << 20) + b'"}\n')
        f.write(encode_event({"kind": "step", "step": 2, "time": 2.0, "loss": 0.5}))
        f.write(b'{"kind":"step","step":3,"time":3.0,"lo')  # still being written: not read, not counted
    run = load_run(tmp_path / "run")
    assert run.skipped_lines == 4
    assert run.table("step")["step"].tolist() == [0.0, 2.0]


def test_readme_examples_run(tmp_path) -> None:
    """docs/run-format.md's writing and loading examples work as printed (the follow loop runs forever)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "run-format.md").read_text()
    section = doc[doc.index("## Reading and writing a run from Python"):]
    reading, writing = re.findall(r"```python\n(.*?)```", section, re.S)
    code = writing + reading.split("with RunFollower")[0]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["my-run finished 0", "0.0 0.69 0.1"]


def test_rundata_grows_in_batches_without_changing_tables_already_handed_out() -> None:
    data = RunData()
    data.extend([{"kind": "step", "step": 0, "time": 1.0, "loss": "NaN", "lr": [0.1]}])
    first = data.table("step")
    for i in range(1, 200):  # past the point where chunks are joined
        data.extend([{"kind": "step", "step": i, "time": 1.0 + i, "loss": 1.0 / i, "lr": [0.1, 0.2]}])
    data.extend([{"kind": "step", "step": 200, "time": 201.0, "grad_norm": 3.0}])
    table = data.table("step")
    assert list(first) == ["step", "time", "loss", "lr"] and first["lr"].shape == (1, 1)
    assert table["step"].tolist() == list(range(201)) and np.isnan(table["loss"][0])
    assert table["lr"].shape == (201, 2) and np.isnan(table["lr"][0, 1]) and np.isnan(table["lr"][200]).all()
    assert np.isnan(table["grad_norm"][:200]).all() and table["grad_norm"][200] == 3.0
    assert data.count == len(data) == 201 and data.last_step == 200 and data.last_time == 201.0


def _same_tables(a, b, kinds=None, columns=None) -> None:
    for kind in kinds or b.data.kinds():
        ta, tb = a.table(kind), b.table(kind)
        for name in columns or tb:
            if tb[name].dtype == object or ta[name].dtype == object:
                # An object column (text among numbers) holds a number as the line had it (3, None)
                # or as a float (3.0, NaN) depending on how its block was read: compare what readers
                # take from it (float_column) and the texts.
                assert np.array_equal(float_column(ta[name]), float_column(tb[name]), equal_nan=True), (kind, name)
                texts = [[(i, v) for i, v in enumerate(t[name]) if isinstance(v, str)] for t in (ta, tb)]
                assert texts[0] == texts[1], (kind, name)
            else:
                assert np.array_equal(ta[name], tb[name], equal_nan=True), (kind, name)


def test_small_chunks_and_projected_loads_equal_the_plain_one(tmp_path) -> None:
    """Reading the log in small chunks (every block boundary somewhere else), and a load of only
    the advisor's step fields, give what one plain load gives: the same events, records, counts
    and skipped lines."""
    from lrtui.advisor import STEP_FIELDS_READ
    from lrtui.runlog import RunData
    from lrtui.runlog.lines import iter_complete_blocks

    rng = random.Random(2)
    specials = [NAN, INF, -INF, None, 0.25, 3]
    with RunWriter(tmp_path / "run", {"name": "mix"}) as writer:
        for i in range(20_000):
            fields = {"loss": rng.choice(specials) if i % 11 == 0 else rng.random(), "grad_norm": rng.random(),
                      "update_norm": 0.01, "lr": [0.1, rng.choice(specials)], "effective_lr": [None, None]}
            if i % 7 == 0:
                del fields["grad_norm"]
            if i == 9000:
                fields["loss"] = "0.5"  # a block the typed decoders refuse: read the generic way
            writer.write("step", i, **fields)
            if i % 97 == 0:
                writer.write("sharpness", i, method="hessian", value=rng.random(), hvps=3)
            if i % 1000 == 0:
                writer.write("metric", i, test_acc=rng.random(), phase="pretrain")
    with open(tmp_path / "run" / "events.jsonl", "ab") as f:
        f.write(b"not json\n" + b'{"kind":"step","step":20000,"time":1,"x":"' + b"a" * (2 << 20) + b'"}\n')
        f.write(b'{"kind":"step","step":20001,"time":2.0,"loss":0.5}\n{"kind":"step","step":20002,"ti')
    plain = load_run(tmp_path / "run")
    projected = load_run(tmp_path / "run", step_fields=STEP_FIELDS_READ)
    small = RunData()
    small_skipped = 0
    with open(tmp_path / "run" / "events.jsonl", "rb") as f:
        for block, too_long in iter_complete_blocks(f, chunk_bytes=100_003):
            small_skipped += small.extend_block(block) + too_long
    small.compact()
    chunked = type(plain)(plain.path, plain.meta, small, small_skipped)
    for other in (chunked, projected):
        assert other.skipped_lines == plain.skipped_lines == 2
        assert other.data.count == plain.data.count and other.data.records == plain.data.records
        assert (other.data.last_time, other.data.last_step) == (plain.data.last_time, plain.data.last_step)
        assert set(other.data.kinds()) == set(plain.data.kinds())
    _same_tables(chunked, plain)
    _same_tables(projected, plain, kinds=["sharpness", "metric"])
    _same_tables(projected, plain, kinds=["step"], columns=STEP_FIELDS_READ)
    assert plain.table("step")["step"][-1] == 20001 and len(plain.table("step")["step"]) == 20001
    assert plain.table("step")["loss"][9000] == "0.5" and projected.table("step")["loss"][9000] == "0.5"


