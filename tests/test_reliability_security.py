"""Security: readers never run anything from a run, never leave its directory, respect the umask, open no port."""

from __future__ import annotations

import json
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lrtui.runlog import RunFollower, RunFormatError, RunWriter, find_runs, load_run

HERE = Path(__file__).parent / "reliability"
sys.path.insert(0, str(HERE))
from runfuzz import write_meta  # noqa: E402


class _Payload:
    """Unpickling this runs code that creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.sentinel)!r}, 'w').write('pickle ran')",))


def _booby_trapped_run(run_dir: Path, sentinel: Path) -> None:
    """A run directory full of things that would run code if anything imported, executed or
    unpickled them, and JSON that names dangerous functions."""
    code = f"open({str(sentinel)!r}, 'w').write('code ran')\n"
    write_meta(run_dir, name="$(touch /tmp/x); __import__('os').system('id')",
               extra={"__import__": "os", "__reduce__": ["os.system", "touch x"], "code": code,
                      "__class__": "pickle", "!!python/object": "os.system"})
    for name in ("evil.py", "__init__.py", "numpy.py", "msgspec.py", "textual.py", "sitecustomize.py",
                 "lrtui.py", "probes.py"):
        (run_dir / name).write_text(code)
    (run_dir / "evil.pth").write_text(f"import os; {code}")
    payload = pickle.dumps(_Payload(sentinel))
    for name in ("model.pth", "checkpoint.pkl", "events.pkl", "state.pt"):
        (run_dir / name).write_bytes(payload)
    events = [{"kind": "step", "step": i, "time": 1e9 + i, "loss": 1.0 / (i + 1), "lr": [0.1],
               "note": "__import__('os').system('touch x')"} for i in range(50)]
    events.append({"kind": "metric", "step": 49, "time": 1e9 + 50, "__reduce__": code, "eval": code})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_readers_never_run_import_or_unpickle_anything_from_a_run(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    run_dir = tmp_path / "runs" / "trap"
    _booby_trapped_run(run_dir, sentinel)
    with open(run_dir / "model.pth", "rb") as f:  # the payload is live: prove it once, then remove
        assert f.read(2) == b"\x80\x04"
    # Every reader in a child process under an audit hook, the app included.
    done = subprocess.run([sys.executable, str(HERE / "untrusted_reader.py"), str(run_dir)],
                          capture_output=True, text=True, timeout=120, cwd=run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    executed = [e for e in report["events"] if e[0] != "open"]
    assert executed == [], executed  # no exec, compile, import, unpickling or process start
    opened = {Path(e[1]).name for e in report["events"] if e[0] == "open"}
    assert opened <= {"meta.json", "events.jsonl", "trap"}, opened  # only the two run files
    assert report["sockets"] == []  # no listener, no connection while the app ran
    # The command users type, from inside the run, where its .py files could shadow modules.
    for argv in (["lrtui", "advise", "."], ["lrtui", "advise", "--json", "."], ["lrtui", "advise", ".."]):
        cli = subprocess.run([shutil.which("lrtui") or "lrtui", *argv[1:]], capture_output=True, text=True,
                             timeout=120, cwd=run_dir)
        assert cli.returncode in (0, 3) and "Traceback" not in cli.stderr, cli.stderr
    assert not sentinel.exists(), sentinel.read_text()


def test_no_path_inside_a_run_leads_outside_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"kind":"step","step":0,"time":1,"loss":42}\n')
    outside_meta = tmp_path / "outside-meta.json"
    outside_meta.write_text(json.dumps({"schema": "1.0", "name": "outside"}))
    linked_log = tmp_path / "runs" / "linked-log"
    write_meta(linked_log)
    (linked_log / "events.jsonl").symlink_to(secret)
    linked_meta = tmp_path / "runs" / "linked-meta"
    linked_meta.mkdir(parents=True)
    (linked_meta / "meta.json").symlink_to(outside_meta)
    (linked_meta / "events.jsonl").write_text('{"kind":"step","step":0,"time":1,"loss":1}\n')
    for run_dir in (linked_log, linked_meta):
        with pytest.raises(RunFormatError, match="outside the run directory"):
            load_run(run_dir)
        with RunFollower(run_dir, use_inotify=False) as follower, pytest.raises(RunFormatError):
            follower.read_new()
        cli = subprocess.run([shutil.which("lrtui") or "lrtui", "advise", str(run_dir)],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 2 and "outside the run directory" in cli.stderr, cli.stderr
        assert len(cli.stderr.splitlines()) == 1
    # A sweep listing never follows a linked directory out of the sweep.
    real_run = tmp_path / "elsewhere" / "real"
    write_meta(real_run)
    sweep = tmp_path / "sweep"
    write_meta(sweep / "inside")
    (sweep / "linked").symlink_to(real_run, target_is_directory=True)
    assert find_runs(sweep) == [sweep / "inside"]
    from lrtui.app.runs import discover

    assert discover(sweep)[0] == [sweep / "inside"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_created_files_get_the_users_default_mode(tmp_path: Path, umask: int) -> None:
    run_dir = tmp_path / "deep" / "run"
    script = (f"import os; os.umask({umask})\n"
              "from lrtui.runlog import RunWriter\n"
              f"w = RunWriter({str(run_dir)!r}, {{'name': 'm'}}); w.write('step', 0, loss=1.0); w.close()\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    for path, base in ((run_dir / "meta.json", 0o666), (run_dir / "events.jsonl", 0o666),
                       (run_dir, 0o777), (run_dir.parent, 0o777)):
        assert stat.S_IMODE(path.stat().st_mode) == base & ~umask, (path, oct(path.stat().st_mode))
    assert not (run_dir / "meta.json.tmp").exists()


def test_writer_and_follower_open_no_socket(tmp_path: Path) -> None:
    import psutil

    before = psutil.Process().net_connections(kind="all")
    writer = RunWriter(tmp_path / "run", {"name": "net"})
    with RunFollower(tmp_path / "run") as follower:
        for step in range(100):
            writer.write("step", step, loss=1.0)
        writer.flush()
        follower.read_new()
        during = psutil.Process().net_connections(kind="all")
    writer.close()
    assert during == before


def _big_run(run_dir: Path, min_bytes: int) -> None:
    """A real run of at least ``min_bytes`` of ordinary step lines (written in bulk, fast)."""
    write_meta(run_dir, name="big")
    block = 20_000
    with open(run_dir / "events.jsonl", "wb") as f:
        step = 0
        while f.tell() < min_bytes:
            f.write(b"".join(b'{"kind":"step","step":%d,"time":%d.5,"loss":%.6f,"grad_norm":1.25,'
                             b'"update_norm":0.004,"weight_norm":31.6,"lr":[0.1,0.05,0.01],'
                             b'"effective_lr":[0.003,null,null]}\n' % (s, s, 2.0 / (1 + s * 1e-3))
                             for s in range(step, step + block)))
            step += block


def test_advise_on_a_big_log_imports_nothing_from_the_working_directory(tmp_path: Path) -> None:
    """``lrtui advise`` (the installed command) on a log of 65 MiB, run from a directory holding
    a ``msgspec.py``, ``numpy.py`` and ``lrtui.py`` that would leave a mark if imported: no
    process of the command imports them. (The parallel loader's ``python -c`` helpers, started
    for logs of 64 MiB or more, put the working directory first on their path.)"""
    lrtui_cmd = Path(sys.executable).with_name("lrtui")
    if not lrtui_cmd.exists():
        pytest.skip("the lrtui command is not installed next to this Python")
    run, cwd = tmp_path / "big", tmp_path / "cwd"
    _big_run(run, 65 << 20)
    cwd.mkdir()
    mark = tmp_path / "imported"
    for name in ("msgspec", "numpy", "lrtui", "pickle", "sitecustomize"):
        (cwd / f"{name}.py").write_text(f"open({str(mark)!r}, 'a').write({name!r} + '\\n')\n"
                                        "raise SystemExit('hostile module imported')\n")
    done = subprocess.run([str(lrtui_cmd), "advise", "--json", str(run)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert not mark.exists(), mark.read_text()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["logged_steps"] >= 200_000
