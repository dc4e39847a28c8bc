"""The ``lrtui`` command: --version, --help of each subcommand, and one-line errors with exit 2."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from lrtui import __version__
from lrtui.cli import COMMANDS, EXIT_BAD_INPUT, build_parser, main
from lrtui.runlog.format import encode_json


def lrtui(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed ``lrtui`` command the way a user does."""
    env = {k: v for k, v in os.environ.items() if k != "LRTUI_DEBUG"}
    return subprocess.run(["lrtui", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_BAD_INPUT, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrtui: "), proc.stderr
    return lines[0]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``lrtui.cli.main`` in this process (fast); argparse exits through SystemExit."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_version() -> None:
    proc = lrtui("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lrtui {__version__}"


def test_top_level_help_lists_every_subcommand(capsys) -> None:
    for args in (["--help"], []):
        code, out, _ = run_main(capsys, *args)
        assert code == 0
        for command in COMMANDS:
            assert f"    {command} " in out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_has_help(capsys, command: str) -> None:
    code, out, err = run_main(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: lrtui {command}")
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    assert subparser.description and " ".join(subparser.description.split()[:3]) in " ".join(out.split())


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["frobnicate"],
    ["watch"],  # a missing argument
    ["replay", "x", "--speed", "-1"],
    ["watch", "x", "--refresh", "nan"],
    ["demo", "--steps", "0"],
    ["advise", "x", "--json", "extra"],
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, args: list[str]) -> None:
    code, out, err = run_main(capsys, *args)
    assert code == EXIT_BAD_INPUT and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("lrtui: ") and "Traceback" not in err


def test_bad_argument_through_the_installed_command() -> None:
    line = assert_one_line_error(lrtui("replay", "x", "--speed", "fast"))
    assert "--speed" in line and "not a number" in line


def test_missing_run_is_one_line(tmp_path) -> None:
    line = assert_one_line_error(lrtui("advise", str(tmp_path / "nowhere")))
    assert "nowhere" in line


def test_newer_schema_is_refused_by_the_command(tmp_path) -> None:
    run = tmp_path / "future"
    run.mkdir()
    (run / "meta.json").write_bytes(encode_json({"schema": "2.0", "name": "future"}))
    (run / "events.jsonl").write_bytes(b"")
    line = assert_one_line_error(lrtui("advise", str(run)))
    if importlib.util.find_spec("lrtui.advise") is not None:  # once advise exists, it says why
        assert "schema 2.0" in line and "upgrade lrtui" in line


@pytest.mark.parametrize("module", ["lrtui", "lrtui.cli"])
def test_python_dash_m_entry_points(tmp_path, module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and __version__ in proc.stdout
    # A subcommand's bad input is the same one-line exit 2 (not an "internal error") however the
    # command was started: every module raises the one UserError the command catches.
    for command in ("advise", "replay"):
        proc = subprocess.run([sys.executable, "-m", module, command, str(tmp_path / "missing")],
                              capture_output=True, text=True, timeout=60)
        assert "internal error" not in assert_one_line_error(proc)

