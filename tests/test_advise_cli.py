"""``lrtui advise`` as a real subprocess on run directories written with RunWriter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lrtui.runlog import RunWriter

OPT = {"class": "SGD", "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0, "nesterov": False,
                                         "weight_decay": 0.0}]}


#: The ``lrtui`` command, run from this interpreter (the package may not be on PATH).
LRTUI = [sys.executable, "-m", "lrtui"]


def lrtui(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*LRTUI, *args], capture_output=True, text=True, timeout=timeout)


def write_run(path: Path, loss: np.ndarray, lr: float = 0.1, finetune_acc: float | None = None) -> Path:
    meta = {"name": path.name, "optimizer": {"class": "SGD", "param_groups": [{"lr": lr, "momentum": 0.9}]}}
    with RunWriter(path, meta) as w:
        for i, value in enumerate(loss):
            w.write("step", i, loss=float(value), grad_norm=1.0, lr=[lr])
            if i % 100 == 99:
                w.write("sharpness", i, method="hessian", value=30.0, hvps=4, seconds=0.01, tolerance=1e-3,
                        converged=True, warm_start=True)
        if finetune_acc is not None:
            w.write("metric", len(loss), phase="finetune", test_acc=finetune_acc)
    return path


def equilibrium(n=2000, seed=0):
    r = np.random.default_rng(seed)
    t = np.arange(n)
    return 0.3 + 0.7 * np.exp(-t / 100) + 0.05 * r.standard_normal(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    eq = write_run(root / "eq", equilibrium())
    bad = equilibrium()
    bad[1500:] = np.nan
    div = write_run(root / "div", bad)
    sweep = root / "sweep"
    for k, lr in enumerate([0.01, 0.02, 0.04, 0.08]):
        if lr <= 0.02:
            loss = np.exp(-np.arange(2000) / 150) + 1e-4
        else:
            loss = equilibrium(seed=k) * (lr / 0.04)
        write_run(sweep / f"lr{lr:g}", loss, lr=lr, finetune_acc=0.9 - abs(np.log(lr / 0.04)))
    return {"eq": eq, "div": div, "sweep": sweep, "root": root}


def test_human_output_and_exit_0(runs):
    p = lrtui("advise", str(runs["eq"]))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "regime equilibrium" in out and "threshold 38" in out and "below the edge of stability" in out
    assert "recommend drop_lr" in out and "recommend start_averaging" in out and "new_lr" not in out
    assert len(out.splitlines()) <= 8


def test_json_schema_and_exit_3_when_diverged(runs):
    p = lrtui("advise", "--json", str(runs["div"]))
    assert p.returncode == 3, p.stderr
    js = json.loads(p.stdout)
    assert js["run"] == "div" and js["regime"] == "diverged" and js["diverged_at_step"] == 1500
    assert js["lr"] == 0.1 and js["sharpness"] == 30.0 and js["sharpness_threshold"] == pytest.approx(38.0)
    assert js["stability_ratio"] == pytest.approx(30 / 38) and js["max_stable_lr"] == pytest.approx(38 / 300)
    acts = {r["action"]: r for r in js["recommendations"]}
    assert acts["rollback"]["to_step"] <= 1400 and acts["lower_lr"]["new_lr"] == pytest.approx(0.05)
    assert all(r["reason"] and isinstance(r["step"], int) for r in js["recommendations"])


def test_sweep_json(runs):
    p = lrtui("advise", "--json", str(runs["sweep"]))
    assert p.returncode == 0, p.stderr
    js = json.loads(p.stdout)
    assert [r["initial_lr"] for r in js["runs"]] == [0.01, 0.02, 0.04, 0.08]
    assert [r["converged"] for r in js["runs"]] == [True, True, False, False]
    assert js["convergence_threshold_lr"] == pytest.approx((0.02 * 0.04) ** 0.5)
    lo, hi = js["recommended_initial_lr"]
    assert lo < 0.04 < hi and js["best"]["finetune"]["lr"] == 0.04
    raises = [x for r in js["runs"] for x in r["recommendations"] if x["action"] == "raise_lr"]
    assert [x["new_lr"] for x in raises] == pytest.approx([(lo * hi) ** 0.5] * 2)  # into the band, not x2
    human = lrtui("advise", str(runs["sweep"]))
    assert "convergence threshold" in human.stdout and "best after finetune: lr 0.04" in human.stdout
    assert "in the band" in human.stdout and "note: in this sweep" not in human.stdout  # the band held the winner


def test_threshold_lr_from_an_earlier_sweep(runs):
    """--threshold-lr: a single run's drop_lr goes down to it (x0.1 of 0.1 would be above it)."""
    plain = json.loads(lrtui("advise", "--json", str(runs["eq"])).stdout)
    aimed = json.loads(lrtui("advise", "--json", "--threshold-lr", "0.004", str(runs["eq"])).stdout)
    drop = {r["action"]: r for r in plain["recommendations"]}["drop_lr"]
    aimed_drop = {r["action"]: r for r in aimed["recommendations"]}["drop_lr"]
    assert drop["new_lr"] == pytest.approx(0.01) and aimed_drop["new_lr"] == 0.004
    assert aimed_drop["step"] == drop["step"] and aimed["regime"] == plain["regime"]


def test_bad_input_exit_2(runs, tmp_path):
    for args in (["advise", str(tmp_path / "missing")], ["advise", str(tmp_path)],
                 ["advise", "--threshold-lr", "0.01", str(runs["sweep"])],
                 ["advise", "--threshold-lr", "0", str(runs["eq"])]):
        p = lrtui(*args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (args, p.stderr)
    bad = tmp_path / "badmeta"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    p = lrtui("advise", str(bad))
    assert p.returncode == 2 and "not valid JSON" in p.stderr


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from lrtui.runlog import RunWriter
    path, diverge = sys.argv[1], sys.argv[2] == "1"
    r = np.random.default_rng(0)
    t = np.arange(1500)
    loss = 0.3 + 0.7 * np.exp(-t / 100) + 0.05 * r.standard_normal(1500)
    if diverge:
        loss[1200:] = np.inf
    w = RunWriter(path, {"name": "live", "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.1}]}},
                  flush_interval=0.05)
    for i in range(1500):
        w.write("step", i, loss=float(loss[i]), grad_norm=1.0, lr=[0.1])
        if i % 100 == 0:
            time.sleep(0.1)
    w.close()
""")


@pytest.mark.parametrize("diverge", [False, True])
def test_follow_prints_recommendations_as_they_arise(tmp_path, diverge):
    run = tmp_path / "live"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run.mkdir()  # the run exists; its files come later
    follow = subprocess.Popen([*LRTUI, "advise", "--json", "--follow", "--poll",
                               str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.run([sys.executable, str(script), str(run), "1" if diverge else "0"], timeout=120)
    assert writer.returncode == 0
    out, err = follow.communicate(timeout=60)
    printed = [json.loads(line) for line in out.splitlines()]
    assert follow.returncode == (3 if diverge else 0), err
    lines = [r for r in printed if not r.get("withdrawn")]
    withdrawn = [r for r in printed if r.get("withdrawn")]
    actions = [r["action"] for r in lines]
    assert actions[:2] == ["drop_lr", "start_averaging"] and all(r["run"] == "live" for r in printed)
    if diverge:  # the divergence withdraws the equilibrium's advice, one line each, and says why
        assert actions[2:] == ["lower_lr", "rollback"] and lines[2]["step"] == 1200
        assert [r["action"] for r in withdrawn] == ["drop_lr", "start_averaging"]
        assert all(r["withdrawn_at_step"] == 1200 and "diverged at step 1200" in r["why"] for r in withdrawn)
    else:
        assert len(actions) == 2 and not withdrawn


def test_offline_sweep_leaves_a_run_still_running_and_falling_undecided(tmp_path):
    """``advise SWEEP`` on a sweep in progress: the lr 0.04 run has no end record and its writer's
    process (this one) is alive, and at step 99 its loss still falls, so it may converge yet; the
    threshold lies between the ended runs 0.01 and 0.08. Once ended, the same log counts."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "lr0.01", np.exp(-np.arange(2000) / 150) + 1e-4, lr=0.01)
    write_run(sweep / "lr0.08", equilibrium() * 2, lr=0.08)
    falling = 0.3 + 0.7 * np.exp(-np.arange(100) / 100)
    w = RunWriter(sweep / "lr0.04", {"name": "lr0.04", "optimizer": {"class": "SGD", "param_groups": [{"lr": 0.04}]}})
    for i, value in enumerate(falling):
        w.write("step", i, loss=float(value), grad_norm=1.0, lr=[0.04])
    w.flush()
    try:
        js = json.loads(lrtui("advise", "--json", str(sweep)).stdout)
        assert [r["pretrain_regime"] for r in js["runs"]] == ["converging", "converging", "equilibrium"]
        assert js["convergence_threshold_interval"] == [0.01, 0.08]
    finally:
        w.close()  # its end record: now it ended still falling, and did not converge
    js = json.loads(lrtui("advise", "--json", str(sweep)).stdout)
    assert js["convergence_threshold_interval"] == [0.01, 0.04]


def test_advise_reads_only_the_advisors_fields_and_answers_the_same() -> None:
    """``advise`` loads the step fields in STEP_FIELDS_READ only: every sample run and the sweep get
    exactly the verdict a full load gives (so the advisor reads nothing else)."""
    from lrtui.advisor import STEP_FIELDS_READ, Advisor, analyze_sweep
    from lrtui.runlog import find_runs, load_run

    samples = Path(__file__).parents[1] / "sample_runs"
    runs = find_runs(samples) + find_runs(samples / "sweep")
    assert len(runs) >= 15
    for path in runs:
        full, part = load_run(path), load_run(path, step_fields=STEP_FIELDS_READ)
        assert set(part.table("step")) <= set(STEP_FIELDS_READ) < set(full.table("step"))
        assert json.dumps(Advisor.from_run(part).state().to_json(path.name)) == json.dumps(
            Advisor.from_run(full).state().to_json(path.name)), path.name
    sweep = find_runs(samples / "sweep")
    results = [analyze_sweep([(r.meta | {"name": r.name}, r.data) for r in (load_run(p, step_fields=fields) for p in sweep)])
               for fields in (None, STEP_FIELDS_READ)]
    assert json.dumps(results[0].to_json()) == json.dumps(results[1].to_json())


SWEEP_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from pathlib import Path
    from lrtui.runlog import RunWriter
    root = Path(sys.argv[1])
    for k, lr in enumerate([0.02, 0.04, 0.08, 0.005]):  # 0.005 starts once the threshold is known
        r = np.random.default_rng(k)
        t = np.arange(2000)
        if lr <= 0.02:
            loss = np.exp(-t / 150) + 1e-4
        else:
            loss = (0.3 + 0.7 * np.exp(-t / 100) + 0.05 * r.standard_normal(2000)) * (lr / 0.04)
        meta = {"name": f"lr{lr:g}", "optimizer": {"class": "SGD", "param_groups": [{"lr": lr}]}}
        with RunWriter(root / f"lr{lr:g}", meta, flush_interval=0.05) as w:
            for i in range(2000):
                w.write("step", i, loss=float(loss[i]), grad_norm=1.0, lr=[lr])
                if i % (20 if i < 600 else 100) == 0:  # slowly through the fall: seen while undecided
                    time.sleep(0.05)
                if lr == 0.04 and i in (1000, 1500):  # the winner's accuracy moves: not news, no line
                    w.write("metric", i, phase="finetune", test_acc=0.85 if i == 1000 else 0.87)
                if lr == 0.04 and i in (1001, 1501):
                    w.flush()
                    time.sleep(1.5)
            w.write("metric", 2000, phase="finetune", test_acc=0.9 - abs(np.log(lr / 0.04)))
        time.sleep(0.5)  # the launcher starts the next LR
""")


@pytest.mark.parametrize("as_json", [True, False])
def test_follow_a_sweep_as_its_runs_appear(tmp_path, as_json):
    """--follow on a sweep directory: every run, including those started after it, has its
    recommendations printed as they arise, named by run; the sweep's threshold appears only once
    a run above it is decided (equilibrium), and the command ends when every run has."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "lr0.01", np.exp(-np.arange(2000) / 150) + 1e-4, lr=0.01, finetune_acc=0.9 - np.log(4))
    (sweep / "broken").mkdir()
    (sweep / "broken" / "meta.json").write_text("{not json")  # one unreadable run: said once, the rest followed
    script = tmp_path / "writer.py"
    script.write_text(SWEEP_WRITER)
    args = ["--json", "--poll"] if as_json else []
    follow = subprocess.Popen([*LRTUI, "advise", "--follow", *args, str(sweep)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.run([sys.executable, str(script), str(sweep)], timeout=120)
    assert writer.returncode == 0
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0 and "Traceback" not in err, err
    assert err.count("\n") == 1 and "broken" in err and "not followed" in err, err
    lines = out.splitlines()
    if not as_json:
        assert any(line.startswith("lr0.04: recommend drop_lr") for line in lines)
        assert "sweep sweep (5 of 5 runs ended): convergence threshold ≈ 0.0283" in out
        assert "best after finetune: lr 0.04 (lr0.04), test_acc 0.9000 - in the band" in out
        return
    objs = [json.loads(line) for line in lines]
    recs = [(i, o) for i, o in enumerate(objs) if "action" in o]
    sweeps = [(i, o) for i, o in enumerate(objs) if "sweep" in o]
    assert len(recs) + len(sweeps) == len(objs)
    by_run = {}
    for _, o in recs:
        by_run.setdefault(o["run"], []).append(o["action"])
    assert by_run["lr0.01"] == ["raise_lr"] and by_run["lr0.02"] == ["raise_lr"] and by_run["lr0.005"] == ["raise_lr"]
    raise_new = {o["run"]: o["new_lr"] for _, o in recs if o["action"] == "raise_lr"}
    assert raise_new["lr0.02"] == 0.04  # x2: the threshold was not known yet
    assert raise_new["lr0.005"] == pytest.approx((0.02 * 0.04) ** 0.5 * 2.5 ** 0.5)  # once known: the band's middle
    assert by_run["lr0.04"] == ["drop_lr", "start_averaging"] and by_run["lr0.08"][:2] == ["drop_lr", "start_averaging"]
    decided = next(i for i, o in recs if o["run"] == "lr0.04" and o["action"] == "drop_lr")
    known = [(i, o) for i, o in sweeps if o["convergence_threshold_lr"] is not None]
    assert known and known[0][0] > decided  # not before a run above the threshold was decided
    assert any(o["runs_ended"] < o["runs"] for _, o in known)  # while runs were still going
    assert all(o["convergence_threshold_interval"] == [0.02, 0.04] for _, o in known)
    keys = [(o["runs"], o["runs_ended"], o["convergence_threshold_interval"], o["recommended_initial_lr"],
             {p: b["run"] for p, b in o["best"].items()}) for _, o in sweeps]
    assert all(a != b for a, b in zip(keys, keys[1:]))  # each sweep line says something new
    last = sweeps[-1][1]
    assert last["runs"] == 5 and last["runs_ended"] == 5 and last["sweep"] == "sweep"
    assert last["best"]["finetune"]["lr"] == 0.04 and last["best"]["finetune"]["in_recommended_band"] is True
