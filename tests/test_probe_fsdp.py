"""The probe under FSDP on 2 gloo processes: norms of the whole model from the ranks' shards, no hang.

FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel`` on CPU) against an oracle that trains
one process on both ranks' batches; a layout the probe refuses (sharded and plain parameters in one
optimizer); and a rank whose step metrics break, which must not leave the other waiting.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fsdp_training

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fsdp_training.py"), str(out), str(_free_port())],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "stderr.txt").write_text(done.stderr)
    return out


def _events(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if kind is None or e["kind"] == kind]


def _oracle() -> list[tuple[float, float, float]]:
    """(grad, update, weight norm) per step of one process training on both ranks' batches."""
    model = fsdp_training.model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    out = []
    for (x0, y0), (x1, y1) in zip(fsdp_training.data(0), fsdp_training.data(1)):
        loss = criterion(model(torch.cat([x0, x1])), torch.cat([y0, y1]))
        optimizer.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
        optimizer.step()
        update = math.sqrt(sum(float((p.detach() - b).double().square().sum()) for p, b in zip(model.parameters(), before)))
        weight = math.sqrt(sum(float(p.detach().double().square().sum()) for p in model.parameters()))
        out.append((grad, update, weight))
    return out


@pytest.mark.parametrize("scenario", ["fsdp2", "fsdp1"])
def test_norms_are_of_the_whole_model_summed_over_the_shards(runs: Path, scenario: str) -> None:
    assert not any(p.name.startswith(f"{scenario}-rank") for p in runs.iterdir())  # rank 1 writes nothing
    steps = _events(runs / scenario, "step")
    assert [e["step"] for e in steps] == list(range(fsdp_training.STEPS))
    seen = json.loads((runs / f"{scenario}-seen-0.json").read_text())
    for event, loss, (grad, update, weight) in zip(steps, seen, _oracle()):
        assert math.isclose(event["loss"], loss, rel_tol=1e-6)  # rank 0's own batch
        assert math.isclose(event["grad_norm"], grad, rel_tol=1e-4), (event, grad)
        assert math.isclose(event["update_norm"], update, rel_tol=1e-4), (event, update)
        assert math.isclose(event["weight_norm"], weight, rel_tol=1e-4), (event, weight)
    # Sharpness needs a forward on rank 0 alone, which FSDP cannot do: off, said once, no hang.
    warnings = _events(runs / scenario, "warning")
    assert [w["source"] for w in warnings] == ["sharpness"] and "FSDP" in warnings[0]["message"]
    assert _events(runs / scenario, "sharpness") == []
    meta = json.loads((runs / scenario / "meta.json").read_text())
    assert meta["probe"]["adaptive_stride"] is False  # held fixed under FSDP: every rank measures the same steps


def test_a_layout_it_cannot_sum_is_refused_in_one_line_without_norms(runs: Path) -> None:
    steps = _events(runs / "mixed", "step")
    assert [e["step"] for e in steps] == list(range(fsdp_training.STEPS))
    assert all("grad_norm" not in e and "update_norm" not in e and "weight_norm" not in e for e in steps)
    assert all(math.isfinite(e["loss"]) and e["lr"] == [0.1] for e in steps)
    refusal = [w for w in _events(runs / "mixed", "warning") if w["source"] == "grad_norm"]
    assert len(refusal) == 1 and "DTensor and plain parameters" in refusal[0]["message"]
    stderr = (runs / "stderr.txt").read_text()
    assert stderr.count("lrtui probe: grad_norm disabled (gradient, update and weight norms under FSDP2") == 1


def test_a_rank_whose_metrics_break_does_not_leave_the_other_waiting(runs: Path) -> None:
    # Rank 1's probe.step fails at step 2: it sends its last sum marked "left"; rank 0 learns it at
    # step 2's flush and stops its step metrics too, with one line. Both trained all 6 steps.
    assert len(json.loads((runs / "leave-seen-0.json").read_text())) == fsdp_training.STEPS
    assert len(json.loads((runs / "leave-seen-1.json").read_text())) == fsdp_training.STEPS
    steps = _events(runs / "leave", "step")
    assert [e["step"] for e in steps] == [0, 1]
    oracle = _oracle()
    assert all(math.isclose(e["grad_norm"], oracle[e["step"]][0], rel_tol=1e-4) for e in steps)
    step_warnings = [w for w in _events(runs / "leave", "warning") if w["source"] == "step"]
    assert len(step_warnings) == 1 and "another rank stopped measuring" in step_warnings[0]["message"]
    assert _events(runs / "leave", "end")[0]["status"] == "finished"


def test_rank_0_that_cannot_write_its_run_does_not_leave_the_others_waiting(runs: Path) -> None:
    # Rank 0's run directory cannot be made: it measures nothing, and says so to rank 1 at once, which
    # would otherwise wait for rank 0's share of each step at its first flush (up to WAIT_SECONDS).
    for rank in (0, 1):
        assert len(json.loads((runs / f"nolog-seen-{rank}.json").read_text())) == fsdp_training.STEPS
    stderr = (runs / "stderr.txt").read_text()
    assert "lrtui probe: log disabled (cannot create run directory" in stderr
    assert stderr.count("another rank stopped measuring its shard") == 2  # "leave" and "nolog", rank 1 each

