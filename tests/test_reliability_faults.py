"""Training is never hurt: real runs with the probe broken mid-run end with the same weights and one warning per fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lrtui.runlog import load_run

SCRIPT = Path(__file__).parent / "reliability" / "fault_training.py"
FAULT_STEP = 40  # fault_training.FAULT_STEP (not imported: that module imports torch)
RUNS = ["none", "none:plain", "unwritable", "disk_full", "nvml",
        "hvp_raises", "hvp_raises:plain", "hvp_once", "hvp_once:plain"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every run, trained once in forked children of one process that imported torch once."""
    workdir = tmp_path_factory.mktemp("faults")
    done = subprocess.run([sys.executable, str(SCRIPT), str(workdir), *RUNS],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout)
    out = {}
    for name in RUNS:
        folder = workdir / name.replace(":", "-")
        result = json.loads((folder / "result.json").read_text())
        assert statuses[name] == 0 and "error" not in result, (name, result)
        result["stderr"] = [ln for ln in (folder / "stderr").read_text().splitlines() if ln.strip()]
        result["run_dir"] = folder / "run"
        out[name] = result
    return out


def _warnings(run_dir: Path) -> list[dict[str, Any]]:
    return load_run(run_dir).records("warning")


def test_the_probe_itself_changes_nothing(runs: dict[str, dict[str, Any]]) -> None:
    assert runs["none"]["weights_sha256"] == runs["none:plain"]["weights_sha256"]
    assert runs["none"]["stderr"] == []
    run = load_run(runs["none"]["run_dir"])
    assert run.records("warning") == [] and run.status() == "finished"
    assert list(run.table("step")["step"]) == list(range(100))


def test_run_directory_made_unwritable_mid_run(runs: dict[str, dict[str, Any]]) -> None:
    result = runs["unwritable"]
    assert result["weights_sha256"] == runs["none:plain"]["weights_sha256"]
    assert result["steps"] == 100
    # The directory is gone (a file took its place): the one warning can only go to stderr.
    assert result["run_dir"].is_file()
    assert len(result["stderr"]) == 1 and "cannot write run log" in result["stderr"][0], result["stderr"]
    assert "training continues" in result["stderr"][0]


def test_disk_fills_mid_run(runs: dict[str, dict[str, Any]]) -> None:
    result = runs["disk_full"]
    assert result["weights_sha256"] == runs["none:plain"]["weights_sha256"]
    assert len(result["stderr"]) == 1 and "File too large" in result["stderr"][0], result["stderr"]
    # What reached the disk stays readable: every step up to the fault, in order, nothing invented.
    run = load_run(result["run_dir"])
    steps = list(run.table("step")["step"])
    assert steps == list(range(len(steps))) and len(steps) >= FAULT_STEP
    # The process finished: the end record says so (in room made from the log's own last lines)
    # and why events are missing, so the run never reads as crashed.
    assert run.skipped_lines == 0 and run.status() == "finished"
    assert "File too large" in run.end["log_error"] and run.end["events_dropped"] > 0


def test_nvml_raises_mid_run(runs: dict[str, dict[str, Any]]) -> None:
    result = runs["nvml"]
    assert result["weights_sha256"] == runs["none:plain"]["weights_sha256"]
    assert len(result["stderr"]) == 1 and "gpu disabled" in result["stderr"][0], result["stderr"]
    warnings = _warnings(result["run_dir"])
    assert [w["source"] for w in warnings] == ["gpu"]
    system = _events(result["run_dir"], "system")
    with_gpu = [e for e in system if e.get("gpu_util") is not None]
    assert with_gpu and all(e["gpu_util"] == 87 for e in with_gpu)  # read while the GPU answered
    assert system[-1].get("gpu_util") is None  # the process stats go on without the GPU
    assert load_run(result["run_dir"]).status() == "finished"


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


@pytest.mark.parametrize("fault", ["hvp_raises", "hvp_once"])
def test_hessian_vector_product_fails_mid_run(runs: dict[str, dict[str, Any]], fault: str) -> None:
    """From the fault step on, the model has no (raises) or no usable (once_differentiable) double
    backward; the same run without the probe is the reference."""
    result = runs[fault]
    assert result["weights_sha256"] == runs[f"{fault}:plain"]["weights_sha256"]
    assert len(result["stderr"]) == 1 and "sharpness disabled" in result["stderr"][0], result["stderr"]
    run = load_run(result["run_dir"])
    assert [w["source"] for w in run.records("warning")] == ["sharpness"]
    sharpness_steps = [e["step"] for e in _events(result["run_dir"], "sharpness")]
    # Measured before the fault; never after it (no wrong values from a broken Hessian).
    assert sharpness_steps and max(sharpness_steps) < FAULT_STEP, sharpness_steps
    assert list(run.table("step")["step"]) == list(range(100))  # the cheap metrics go on
    assert run.status() == "finished"
