"""The validation corpus end to end: recording tiny runs, their measurements, the committed corpus, the report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probes.tasks.label_noise import random_labels, random_targets
from validation.corpus import corpus
from validation.measure import BRANCH_EVALS, horizon
from validation.record import TRUTH_FILE, record_run, report_points
from validation.report import DOC_BEGIN, DOC_END
from validation.schedules import SCHEDULES, make_scheduler, milestones, phases, warmup_steps
from validation.truth import label_run

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "validation" / "corpus"

torch.set_num_threads(1)


def _spec(path: str, steps: int = 96):
    spec = next(s for s in corpus() if s.path == path)
    return spec.scaled(steps / spec.steps)


def test_the_corpus_covers_every_factor_on_several_tasks_and_every_case() -> None:
    specs = corpus()
    assert 40 <= len(specs) <= 80 and len({s.path for s in specs}) == len(specs)
    tasks = {s.task for s in specs}
    assert {"digits-mlp", "digits-bncnn", "char-gru", "regression", "ticks-mlp"} <= tasks
    for optimizer in ("sgd", "momentum", "adamw"):
        assert len({s.task for s in specs if s.optimizer == optimizer}) >= 3, optimizer
    for schedule in ("constant", "exponential", "warmup_cosine", "onecycle"):
        assert len({s.task for s in specs if s.schedule == schedule}) >= 3, schedule
    assert len({s.task for s in specs if s.schedule in ("step", "multistep")}) >= 3
    assert {s.schedule for s in specs} == set(SCHEDULES)
    assert len({s.task for s in specs if s.noisy_share}) >= 3
    assert any(s.task == "char-gru" and s.clip and s.accumulate > 1 for s in specs)
    for case in range(1, 8):  # every case of issue 18 at least twice (another task or another seed)
        members = [s for s in specs if case in s.cases]
        assert len({(s.task, s.seed) for s in members}) >= 2, case


def test_noisy_regression_targets_keep_their_shape() -> None:
    y = torch.arange(10.0).unsqueeze(1)
    noisy, replaced = random_targets(y, 0.5, seed=3)
    assert noisy.shape == y.shape and replaced.shape == (10,)  # a (N,) mask once broadcast to (N, N)
    assert torch.equal(noisy[~replaced], y[~replaced]) and set(noisy.flatten().tolist()) <= set(y.flatten().tolist())
    labels, flipped = random_labels(torch.zeros(1000, dtype=torch.int64), 0.3, 10, seed=0)
    assert labels.shape == (1000,) and 0.2 < flipped.float().mean() < 0.4 and labels[~flipped].eq(0).all()


def test_schedules_phases_and_report_points() -> None:
    assert milestones("multistep", 1000) == (500, 750) and milestones("step", 900) == (300, 600)
    assert warmup_steps("warmup_cosine", 1000) == 50 and warmup_steps("onecycle", 1000) == 300
    assert [p.name for p in phases("multistep", 1000)] == ["lr1", "lr2", "lr3"]
    assert [(p.start, p.stop) for p in phases("warmup_cosine", 1000)] == [(0, 50), (50, 1000)]
    assert [(p.name, p.start, p.stop) for p in phases("exponential", 1000)] == [("decay", 0, 1000)]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler("exponential", opt, 100)
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)
    points, starts = report_points("multistep", 1000)
    assert points[500] == "50%, before LR step 1" and points[750] == "75%, before LR step 2"
    assert starts[750] == 500 and starts[1000] == 750 and starts[500] == 0
    assert report_points("warmup_cosine", 1000)[0][50] == "end of warm-up"
    assert horizon(1000, 0, 1000) == 512 and horizon(1000, 750, 1000) == 256  # a quarter of the run at least
    assert horizon(10, 0, 1000) == 256 and horizon(10, 0, 1000) % BRANCH_EVALS == 0
    assert horizon(3000, 0, 3000) == 1504


def test_the_measurements_do_not_change_the_recorded_run(tmp_path) -> None:
    spec = _spec("runs/digits-bncnn-sgd-step-lr1e-1-noisy30", 64)
    plain = record_run(spec, tmp_path / "plain", measure=False)
    measured = record_run(spec, tmp_path / "measured")
    assert plain["losses"] == measured["losses"]  # bitwise: the branches draw their own batches
    steps = [json.loads(line) for line in (tmp_path / "measured" / spec.path / "events.jsonl").read_text().splitlines()]
    logged = [e["loss"] for e in steps if e["kind"] == "step"]
    assert len(logged) == len(range(0, 64, spec.stride))


def test_two_tiny_runs_record_and_report_end_to_end(tmp_path) -> None:
    out = tmp_path / "corpus"
    only = ["runs/digits-mlp-momentum-constant-lr3e-2-lossevery10", "sweep-ticks-mlp-sgd/lr1e-1"]
    rec = subprocess.run([sys.executable, "-m", "validation.record", "--out", str(out), "--workers", "2",
                          "--scale", "0.02", "--only", *only], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert rec.returncode == 0, rec.stderr
    assert "recorded 2 runs" in rec.stdout
    for path in only:
        truth = json.loads((out / path / TRUTH_FILE).read_text())
        assert [p["name"] for p in truth["points"]][-1] == "100%"
        first = truth["points"][0]
        assert len(first["frozen"]["loss"]) == BRANCH_EVALS + 1 and len(first["drop"]["loss"]) == BRANCH_EVALS + 1
        assert first["frozen"]["loss"][0] == pytest.approx(first["loss"])
        assert math.isclose(first["drop"]["lrs"][0], 0.1 * first["frozen"]["lrs"][0])
        assert label_run(truth)["points"] == truth["labels"]["points"]
    nulls = [json.loads(line) for line in (out / only[0] / "events.jsonl").read_text().splitlines()]
    losses = [e.get("loss") for e in nulls if e["kind"] == "step"]
    assert None in losses and any(isinstance(v, float) for v in losses)  # probe.step() without a loss
    rep = subprocess.run([sys.executable, "-m", "validation.report", str(out), "--json", str(tmp_path / "r.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert rep.returncode == 0, rep.stderr
    assert "| ground truth \\ advisor |" in rep.stdout and "every miss" in rep.stdout
    scored = json.loads((tmp_path / "r.json").read_text())
    assert scored["summary"]["runs"] == 2 and len(scored["sweeps"]) == 1
    assert scored["summary"]["points"] == sum(len(r["points"]) for r in scored["runs"])


def test_the_report_refuses_bad_input_in_one_line(tmp_path) -> None:
    for args in ([str(tmp_path / "missing")], [str(tmp_path)]):
        rep = subprocess.run([sys.executable, "-m", "validation.report", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, check=False)
        assert rep.returncode == 2 and rep.stderr.count("\n") == 1 and "Traceback" not in rep.stderr
    doc = tmp_path / "doc.md"
    doc.write_text("no markers here\n")
    rep = subprocess.run([sys.executable, "-m", "validation.report", str(COMMITTED), "--only", "runs/catapult-mlp-gd-constant-20x",
                          "--update-doc", str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert rep.returncode == 2 and rep.stderr.count("\n") == 1 and "markers" not in rep.stdout
    assert doc.read_text() == "no markers here\n"  # nothing the user had is lost


def test_seed_scores_one_half_of_the_corpus() -> None:
    """--seed 1 is the held-out half: only seed-1 runs, and the per-half table has its row only."""
    only = ["runs/catapult-mlp-gd-constant"]  # a prefix: the 20x and 3x runs of seed 0, the 3x of seed 1
    rep = subprocess.run([sys.executable, "-m", "validation.report", str(COMMITTED), "--only", *only, "--seed", "1",
                          "--markdown"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert rep.returncode == 0, rep.stderr
    assert "| held-out (seed 1) | 1 |" in rep.stdout and "dev (seed 0)" not in rep.stdout
    assert "catapult-mlp-gd-constant-3x-seed1" in rep.stdout and "runs/catapult-mlp-gd-constant-3x |" not in rep.stdout
    bad = subprocess.run([sys.executable, "-m", "validation.report", str(COMMITTED), "--only",
                          "runs/catapult-mlp-gd-constant-20x", "--seed", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "seed 1" in bad.stderr


def test_update_doc_replaces_only_the_block_between_the_markers(tmp_path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{DOC_BEGIN}\nold table\n{DOC_END}\nafter\n")
    rep = subprocess.run([sys.executable, "-m", "validation.report", str(COMMITTED), "--only", "runs/catapult-mlp-gd-constant-20x",
                          "--update-doc", str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert rep.returncode == 0, rep.stderr
    text = doc.read_text()
    assert text.startswith(f"before\n{DOC_BEGIN}\n") and text.endswith(f"{DOC_END}\nafter\n")
    assert "old table" not in text and "| diverged | 0 | 0 | 0 | 0 | 1 | 1 |" in text


def _committed_truths() -> dict[str, dict]:
    return {str(p.parent.relative_to(COMMITTED)): json.loads(p.read_text()) for p in sorted(COMMITTED.rglob(TRUTH_FILE))}


def _rounded(x):
    """``x`` with every float rounded to 12 significant digits: the labels' trend figures are
    least-squares fits whose last bits depend on the BLAS the check runs on."""
    if isinstance(x, float):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def test_the_committed_corpus_is_complete_small_and_its_labels_follow_the_rules() -> None:
    truths = _committed_truths()
    assert set(truths) == {s.path for s in corpus()}
    size = sum(f.stat().st_size for f in COMMITTED.rglob("*") if f.is_file())
    assert size <= 10 * 2**20
    specs = {s.path: s for s in corpus()}
    for path, truth in truths.items():
        assert truth["spec"] == {"path": path, **specs[path].describe()}, path  # recorded as the corpus says
        assert _rounded(label_run(truth)["points"]) == _rounded(truth["labels"]["points"]), path
        assert (COMMITTED / path / "meta.json").is_file() and (COMMITTED / path / "events.jsonl").is_file()


def test_the_committed_logs_are_what_the_loop_did() -> None:
    """The recorded events carry the schedule, the stride and the null losses their spec asks for."""
    for spec in corpus():
        steps = [e for e in map(json.loads, (COMMITTED / spec.path / "events.jsonl").read_text().splitlines())
                 if e["kind"] == "step"]
        truth = json.loads((COMMITTED / spec.path / TRUTH_FILE).read_text())
        assert [e["step"] for e in steps] == list(range(0, truth["steps_done"], spec.stride)), spec.path
        losses = [e.get("loss") for e in steps]
        # probe.step() without a loss at the steps the loop gives none (step % loss_every != 0)
        assert [v is None for v in losses] == [bool(spec.loss_every) and e["step"] % spec.loss_every != 0
                                               for e in steps], spec.path
        assert (None in losses) == (6 in spec.cases), spec.path
        lrs = [e["lr"][0] for e in steps]
        for m in milestones(spec.schedule, spec.steps):  # the LR in force drops at each step of the schedule
            before = [lr for e, lr in zip(steps, lrs) if e["step"] < m][-1]
            after = [lr for e, lr in zip(steps, lrs) if e["step"] >= m]
            if after:
                assert after[0] < 0.5 * before, spec.path
        if spec.schedule in ("warmup_cosine", "onecycle"):
            peak = max(range(len(lrs)), key=lrs.__getitem__)
            assert 0 < steps[peak]["step"] < spec.steps and lrs[0] < lrs[peak] and lrs[-1] < lrs[peak], spec.path
        if spec.schedule == "exponential":
            assert all(b < a for a, b in zip(lrs, lrs[1:])), spec.path


def test_the_tables_in_docs_validation_are_the_reports_of_the_committed_corpus() -> None:
    """docs/validation.md holds `python -m validation.report --markdown` verbatim: it cannot go stale."""
    rep = subprocess.run([sys.executable, "-m", "validation.report", "--markdown"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert rep.returncode == 0, rep.stderr
    assert "| ground truth \\ advisor |" in rep.stdout
    doc = (ROOT / "docs" / "validation.md").read_text()
    assert rep.stdout.strip() in doc
