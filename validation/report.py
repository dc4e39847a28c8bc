"""Score the advisor on the validation corpus: `python -m validation.report [CORPUS_DIR] [--json OUT]`.

Each run is read with lrtui's live reader (``lrtui.runlog.RunFollower``) and fed event by event
to ``lrtui.advisor.Advisor``, as ``lrtui watch`` and ``advise --follow`` feed it; at each report
point the advisor's state (after every event up to that step) is compared with the point's
ground truth, recomputed from ``truth.json`` by ``validation.truth``. Sweeps are scored with
``lrtui advise --json``. Prints the confusion table (ground truth x advisor), the step at which
each verdict first came, every miss, and for each judged action whether it came where the
truth says it is right. ``--markdown`` prints the tables for docs/validation.md.
"""

from __future__ import annotations

import argparse
import os
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from validation.corpus import CASES
from validation.scoring import (
    Snapshot,
    action_outcomes,
    confusion,
    confusion_markdown,
    first_steps,
    issued_in_range,
    regime_outcome,
    right_ranges,
)
from validation.truth import JUDGED_ACTIONS, label_run

TRUTH_FILE = "truth.json"
DEFAULT_CORPUS = Path(__file__).resolve().parent / "corpus"
#: Timeline resolution: the advisor's state is looked at after about this many step events per run.
TIMELINE_LOOKS = 400


def find_truth_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (any depth) that hold a ``truth.json``, sorted."""
    return sorted(p.parent for p in root.rglob(TRUTH_FILE))


def read_events(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, events in file order) through the live reader, as ``lrtui watch`` reads a run."""
    from lrtui.runlog import RunFollower

    follower = RunFollower(run_dir, use_inotify=False)
    try:
        events: list[dict[str, Any]] = []
        while True:
            batch = follower.read_new()
            if batch.reset:
                events = []
            if not batch.events and batch.meta is None:
                break
            events.extend(batch.events)
        return follower.meta or {}, events
    finally:
        follower.close()


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "to_json"):
        return item.to_json()
    return {"action": getattr(item, "action", None), "step": getattr(item, "step", None)}


def snapshot(state: Any) -> Snapshot:
    """The parts of an ``AdvisorState`` the scoring needs (``withdrawn``/``done`` when it has them)."""
    return Snapshot(state.step, state.regime, [_as_dict(r) for r in state.recommendations],
                    [_as_dict(r) for r in getattr(state, "withdrawn", None) or []],
                    [_as_dict(r) for r in getattr(state, "done", None) or []])


def _step_key(event: dict[str, Any]) -> float:
    step = event.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else math.inf


def advise_at_points(meta: dict[str, Any], events: list[dict[str, Any]], point_steps: list[int]) -> tuple[
        dict[int, Snapshot], list[tuple[int, str]], list[tuple[int, str]], Any]:
    """Feed ``events`` (ordered by step, file order within a step) to a fresh ``Advisor``.

    Returns the snapshot just before the first event at or after each report step (so after
    optimizer step t-1 for point t), the regime timeline and the recommendation timeline
    ((step, regime) changes and (step, action) first appearances) and the final state.
    """
    from lrtui.advisor import Advisor

    adv = Advisor(meta)
    ordered = sorted(events, key=_step_key)
    n_steps = sum(1 for e in ordered if e.get("kind") == "step")
    every = max(1, n_steps // TIMELINE_LOOKS)
    pending = sorted(set(point_steps))
    snaps: dict[int, Snapshot] = {}
    regimes: list[tuple[int, str]] = []
    actions: list[tuple[int, str]] = []
    seen_actions: set[tuple[str, Any]] = set()
    steps_fed = 0

    def look() -> None:
        st = adv.state()
        if st.step is None:
            return
        if not regimes or regimes[-1][1] != st.regime:
            regimes.append((st.step, st.regime))
        for r in st.recommendations:
            d = _as_dict(r)
            key = (d.get("action"), d.get("step"))
            if key not in seen_actions:
                seen_actions.add(key)
                actions.append((d.get("step") if isinstance(d.get("step"), int) else st.step, d.get("action")))

    for event in ordered:
        key = _step_key(event)
        while pending and key >= pending[0]:
            look()
            snaps[pending.pop(0)] = snapshot(adv.state())
        adv.update(event)
        if event.get("kind") == "step":
            steps_fed += 1
            if steps_fed % every == 0:
                look()
    adv.flush()
    look()
    final = adv.state()
    for t in pending:
        snaps[t] = snapshot(final)
    return snaps, regimes, actions, final


def score_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report says about one run (plain data, for printing or ``--json``)."""
    truth = json.loads((run_dir / TRUTH_FILE).read_text())
    labels = label_run(truth)
    stored = truth.get("labels", {}).get("points")
    stale = stored is not None and [p["regime"] for p in stored] != [p["regime"] for p in labels["points"]]
    meta, events = read_events(run_dir)
    points = labels["points"]
    snaps, regimes, actions, final = advise_at_points(meta, events, [p["step"] for p in points])
    cp = truth["checkpoints"]
    rows = []
    for p in points:
        snap = snaps[p["step"]]
        rows.append({
            "point": p["name"], "step": p["step"], "phase": p["phase"], "truth": p["regime"], "why": p["why"],
            "advisor": snap.regime, "outcome": regime_outcome(p["regime"], p["phase"], snap.regime),
            "actions": action_outcomes(p, snap, cp["step"], cp["loss"]),
            "in_force": [r.get("action") for r in snap.recommendations],
            "withdrawn": len(snap.withdrawn),
        })
    issued = [{"action": a, "step": s, "where": issued_in_range(s, points, a)}
              for s, a in actions if a in JUDGED_ACTIONS]
    truth_timeline = [(p["step"], p["regime"]) for p in points]
    return {
        "run": str(run_dir), "spec": truth["spec"], "stale_labels": stale, "points": rows,
        "truth_first": first_steps(truth_timeline), "advisor_first": first_steps(regimes),
        "advisor_timeline": regimes, "issued": issued,
        "right_ranges": {a: right_ranges(points, a) for a in JUDGED_ACTIONS},
        "catapults_truth": len(labels["catapults"]), "catapults_advisor": getattr(final, "catapults", None),
        "final_regime": final.regime, "diverged_at_step": getattr(final, "diverged_at_step", None),
    }


def score_sweep(sweep_dir: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's band from ``lrtui advise --json`` against the truth of its runs: which LRs
    converged within the budget (last point's full-train loss below 1e-2, ``why`` says so) and
    which failed (chance or diverged at the end)."""
    proc = subprocess.run([sys.executable, "-m", "lrtui", "advise", "--json", str(sweep_dir)],
                          capture_output=True, text=True, check=False)
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"sweep": str(sweep_dir), "error": (proc.stderr or proc.stdout).strip()[:300]}
    members = sorted((r for r in runs if Path(r["run"]).parent == sweep_dir), key=lambda r: r["spec"]["lr"])
    truth = {r["spec"]["lr"]: r["points"][-1] for r in members}
    converged = [lr for lr, p in truth.items() if p["truth"] == "converging" and "< 0.01" in p["why"]]
    failed = [lr for lr, p in truth.items() if p["truth"] in ("chance", "diverged")]
    band = out.get("recommended_initial_lr")
    in_band = [lr for lr in failed if band and band[0] <= lr < band[1]]  # the band is half-open [lo, hi)
    largest = max(converged) if converged else None
    above = min((lr for lr in truth if largest is not None and lr > largest), default=None)
    threshold = out.get("convergence_threshold_lr")
    threshold_right = (None if largest is None or above is None or threshold is None
                       else largest < threshold < above)
    return {"sweep": str(sweep_dir), "band": band, "threshold": threshold,
            "truth_threshold_between": [largest, above], "threshold_right": threshold_right,
            "failed_lrs": failed, "failed_in_band": in_band,
            "capped_by": out.get("recommended_initial_lr_capped_by")}


def summarize(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the corpus: the confusion table, matches, action verdicts, cases."""
    table = confusion((r["truth"], r["advisor"]) for s in scored for r in s["points"])
    outcomes = [r["outcome"] for s in scored for r in s["points"]]
    acts: dict[str, dict[str, int]] = {a: {} for a in JUDGED_ACTIONS}
    for s in scored:
        for r in s["points"]:
            for a in r["actions"]:
                acts[a["action"]][a["verdict"]] = acts[a["action"]].get(a["verdict"], 0) + 1
    end_pairs = [(s["points"][-1]["truth"], s["final_regime"]) for s in scored if s["points"]]
    end_table = confusion(end_pairs)
    end_outcomes = [end_outcome(s) for s in scored if s["points"]]
    issued: dict[str, dict[str, int]] = {a: {} for a in JUDGED_ACTIONS}
    for s in scored:
        for i in s["issued"]:
            issued[i["action"]][i["where"]] = issued[i["action"]].get(i["where"], 0) + 1
    cases = {}
    for case in CASES:
        members = [s for s in scored if case in s["spec"].get("cases", [])]
        rs = [r["outcome"] for s in members for r in s["points"]]
        ends = [end_outcome(s) for s in members if s["points"]]
        cases[case] = {"runs": len(members), "match": rs.count("match"), "miss": rs.count("miss"),
                       "end_match": ends.count("match"), "end_miss": ends.count("miss"),
                       "wrong_actions": sum(a["verdict"] == "wrong" for s in members for r in s["points"]
                                            for a in r["actions"]),
                       "missing_actions": sum(a["verdict"] == "missing" for s in members for r in s["points"]
                                              for a in r["actions"])}
    silent = sum(r["outcome"] == "miss" and r["advisor"] == "warmup" for s in scored for r in s["points"])
    return {"runs": len(scored), "points": len(outcomes), "match": outcomes.count("match"),
            "miss": outcomes.count("miss"), "unscored": outcomes.count("unscored"), "silent": silent,
            "end_match": end_outcomes.count("match"), "end_miss": end_outcomes.count("miss"),
            "end_unscored": end_outcomes.count("unscored"),
            "confusion": {f"{t}|{a}": n for (t, a), n in table.items()}, "table": table,
            "end_confusion": {f"{t}|{a}": n for (t, a), n in end_table.items()}, "end_table": end_table,
            "actions": acts, "issued": issued, "cases": cases}


#: The corpus's split (docs/validation.md, "Dev and held-out"): fixes are chosen on seed 0, judged on seed 1.
HALVES = {0: "dev (seed 0)", 1: "held-out (seed 1)"}


def halves_markdown(scored: list[dict[str, Any]]) -> list[str]:
    """One row per half of the corpus: live and end scores, drop_lr wrong in force and issued wrong."""
    rows = ["| half | runs | live right | end right | drop_lr wrong in force (points) | drop_lr issued: wrong |",
            "|---|---|---|---|---|---|"]
    for seed, name in HALVES.items():
        members = [s for s in scored if s["spec"].get("seed", 0) == seed]
        if not members:
            continue
        sm = summarize(members)
        rows.append(f"| {name} | {sm['runs']} | {sm['match']}/{sm['match'] + sm['miss']} "
                    f"| {sm['end_match']}/{sm['end_match'] + sm['end_miss']} "
                    f"| {sm['actions']['drop_lr'].get('wrong', 0)} | {sm['issued']['drop_lr'].get('wrong', 0)} |")
    return rows


def end_outcome(scored_run: dict[str, Any]) -> str:
    """The advisor's regime at the end of the run (after every event) against the truth at its last point."""
    last = scored_run["points"][-1]
    return regime_outcome(last["truth"], last["phase"], scored_run["final_regime"])


def _name(s: dict[str, Any], root: Path) -> str:
    return str(Path(s["run"]).relative_to(root))


def print_report(root: Path, scored: list[dict[str, Any]], sweeps: list[dict[str, Any]], markdown: bool) -> None:
    summary = summarize(scored)
    p = print
    scored_points = summary["match"] + summary["miss"]
    shown = os.path.relpath(root) if root.resolve().is_relative_to(Path.cwd().resolve()) else str(root)
    p(f"- validation corpus {shown}: {summary['runs']} runs, {summary['points']} report points, "
      f"{scored_points} scored ({summary['unscored']} unclear)")
    ends = summary["end_match"] + summary["end_miss"]
    p(f"- regime right at {summary['match']} of {scored_points} scored report points (live, "
      f"{summary['match'] / max(scored_points, 1):.0%}), at the end of {summary['end_match']} of {ends} runs "
      f"({summary['end_match'] / max(ends, 1):.0%}) "
      f"({summary['end_unscored']} unclear at the end)")
    p(f"- of the {summary['miss']} live misses, {summary['silent']} are no verdict yet (`warmup` outside a warm-up)"
      f" and {summary['miss'] - summary['silent']} a wrong verdict")
    p("")
    for row in halves_markdown(scored):
        p(row)
    p("")
    p("live: at every report point")
    p("")
    p(confusion_markdown(summary["table"]))
    p("")
    p("at the end of each run (the advisor after every event; the truth at the last report point)")
    p("")
    p(confusion_markdown(summary["end_table"]))
    p("")
    verdicts = ("right", "early", "wrong", "unclear", "missing")
    p("| action in force at a report point | " + " | ".join(verdicts) + " |")
    p("|---" * (len(verdicts) + 1) + "|")
    for a, counts in summary["actions"].items():
        p(f"| {a} | " + " | ".join(str(counts.get(v, 0)) for v in verdicts) + " |")
    p("")
    p("(by the truth at the point; early: the loss still falls at the LR in force but acting pays already;"
      " missing: right there but not in force)")
    p("")
    wheres = ("right", "early", "wrong", "edge", "unclear")
    p("| recommendation issued: where its step lies | " + " | ".join(wheres) + " |")
    p("|---" * (len(wheres) + 1) + "|")
    for a, counts in summary["issued"].items():
        p(f"| {a} | " + " | ".join(str(counts.get(v, 0)) for v in wheres) + " |")
    p("")
    p("(by the truth at the report points on either side of the step it was issued at; edge: they differ)")
    p("")
    p("| case | runs | points right | points missed | end right | end missed | wrong actions in force "
      "| missing actions |")
    p("|---|---|---|---|---|---|---|---|")
    for case, c in summary["cases"].items():
        p(f"| {case}. {CASES[case]} | {c['runs']} | {c['match']} | {c['miss']} | {c['end_match']} "
          f"| {c['end_miss']} | {c['wrong_actions']} | {c['missing_actions']} |")
    if sweeps:
        p("")
        p("| sweep | truth: threshold between | advisor threshold | threshold right | band | failed LRs "
          "| failed LRs in band |")
        p("|---|---|---|---|---|---|---|")
        for sw in sweeps:
            if "error" in sw:
                p(f"| {Path(sw['sweep']).name} | error: {sw['error']} ||||||")
                continue
            band = "—" if not sw["band"] else f"[{sw['band'][0]:.3g}, {sw['band'][1]:.3g}]"
            thr = "—" if sw["threshold"] is None else f"{sw['threshold']:.3g}"
            p(f"| {Path(sw['sweep']).name} | {sw['truth_threshold_between']} | {thr} | {sw['threshold_right']} | {band} "
              f"| {sw['failed_lrs']} | {sw['failed_in_band'] or 'none'} |")
    if markdown:
        print_markdown_runs(root, scored)
        return
    p("")
    p("per run: truth at each point -> advisor (first step of each verdict; actions issued and where)")
    for s in scored:
        name = _name(s, root)
        flags = " [labels in truth.json are stale: re-record]" if s["stale_labels"] else ""
        p(f"- {name}{flags}")
        p("    truth:   " + ", ".join(f"{r['point']}@{r['step']}={r['truth']}" for r in s["points"]))
        p("    advisor: " + ", ".join(f"{r['advisor']}" for r in s["points"]))
        p("    first:   truth " + ", ".join(f"{k}@{v}" for k, v in s["truth_first"].items())
          + " | advisor " + ", ".join(f"{k}@{v}" for k, v in s["advisor_first"].items()))
        if s["issued"]:
            p("    issued:  " + ", ".join(f"{i['action']}@{i['step']} ({i['where']})" for i in s["issued"]))
        ranges = {a: r for a, r in s["right_ranges"].items() if r}
        if ranges:
            p("    right:   " + "; ".join(f"{a} at steps " + ", ".join(f"{lo}-{hi}" for lo, hi in r)
                                         for a, r in ranges.items()))
        if s["catapults_truth"] or s["catapults_advisor"]:
            p(f"    catapults: truth {s['catapults_truth']}, advisor {s['catapults_advisor']}")
    p("")
    p("every miss (regime) and every wrong or missing action:")
    for s in scored:
        for r in s["points"]:
            bad = [a for a in r["actions"] if a["verdict"] in ("wrong", "missing")]
            if r["outcome"] == "miss" or bad:
                what = []
                if r["outcome"] == "miss":
                    what.append(f"truth {r['truth']} ({r['why']}), advisor {r['advisor']}")
                what += [f"{a['action']} {a['verdict']}" + (f" (issued @{a['issued_at']})" if a["issued_at"] is not None
                                                             else "") for a in bad]
                p(f"  {_name(s, root)} {r['point']}@{r['step']}: " + "; ".join(what))


SHORT = {"converging": "conv", "equilibrium": "equi", "chance": "chance", "diverged": "div", "unclear": "?",
         "warmup": "wu"}


def print_markdown_runs(root: Path, scored: list[dict[str, Any]]) -> None:
    """Per run, one table row: truth and advisor at each report point, the step of each of the
    advisor's first verdicts, the recommendations issued (step, where against the truth); then
    every miss and every wrong or missing action, with the truth's reason."""
    p = print
    p("")
    p("per run (points in step order; conv/equi/chance/div, ? unclear, wu: `warmup`; a miss in bold):")
    p("")
    p("| run | point steps | truth | advisor | advisor's first verdicts (step) | issued (step: where) |")
    p("|---|---|---|---|---|---|")
    for s in scored:
        pts = s["points"]
        adv = [f"**{SHORT[r['advisor']]}**" if r["outcome"] == "miss" else SHORT[r["advisor"]] for r in pts]
        first = ", ".join(f"{SHORT.get(k, k)} {v}" for k, v in s["advisor_first"].items())
        issued = ", ".join(f"{i['action']} {i['step']}: {i['where']}" for i in s["issued"]) or "—"
        p(f"| {_name(s, root)} | {' '.join(str(r['step']) for r in pts)} | {' '.join(SHORT[r['truth']] for r in pts)} "
          f"| {' '.join(adv)} | {first} | {issued} |")
    p("")
    p("every miss and every wrong or missing action (the truth's reason in parentheses):")
    p("")
    for s in scored:
        for r in s["points"]:
            bad = [a for a in r["actions"] if a["verdict"] in ("wrong", "missing")]
            if r["outcome"] == "miss" or bad:
                what = []
                if r["outcome"] == "miss":
                    what.append(f"truth {r['truth']} ({r['why']}), advisor {r['advisor']}")
                what += [f"{a['action']} {a['verdict']}" + (f" (issued at {a['issued_at']})"
                                                             if a["issued_at"] is not None else "") for a in bad]
                p(f"- {_name(s, root)} {r['point']} (step {r['step']}): " + "; ".join(what))


DOC_BEGIN, DOC_END = "<!-- validation.report --markdown: begin -->", "<!-- validation.report --markdown: end -->"


def update_doc(doc: Path, root: Path, scored: list[dict[str, Any]], sweeps: list[dict[str, Any]]) -> int:
    """Write the ``--markdown`` tables between ``DOC_BEGIN`` and ``DOC_END`` of ``doc`` (atomically)."""
    import contextlib
    import io

    try:
        text = doc.read_text()
    except OSError as exc:
        print(f"validation.report: {doc}: {exc.strerror}", file=sys.stderr)
        return 2
    if text.count(DOC_BEGIN) != 1 or text.count(DOC_END) != 1 or text.index(DOC_BEGIN) > text.index(DOC_END):
        print(f"validation.report: {doc}: needs one {DOC_BEGIN} line and one {DOC_END} line after it", file=sys.stderr)
        return 2
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_report(root, scored, sweeps, True)
    head, rest = text.split(DOC_BEGIN)
    tail = rest.split(DOC_END)[1]
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(f"{head}{DOC_BEGIN}\n\n{buf.getvalue().strip()}\n\n{DOC_END}{tail}")
    tmp.replace(doc)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.report", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS,
                        help="corpus root (default: validation/corpus)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write everything as JSON to OUT")
    parser.add_argument("--markdown", action="store_true", help="print only the summary tables")
    parser.add_argument("--update-doc", type=Path, metavar="MD",
                        help="replace the tables between the report markers of MD (docs/validation.md) with --markdown's")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="only runs whose path starts with one of these")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="only runs recorded with corpus seed N (0: the dev half, 1: the held-out half)")
    args = parser.parse_args(argv)
    root = args.corpus
    if not root.is_dir():
        print(f"validation.report: {root}: not a directory", file=sys.stderr)
        return 2
    runs = find_truth_runs(root)
    if args.only:
        runs = [r for r in runs if any(str(r.relative_to(root)).startswith(o) for o in args.only)]
    if not runs:
        print(f"validation.report: {root}: no recorded run with a {TRUTH_FILE}", file=sys.stderr)
        return 2
    try:
        scored = [score_run(r) for r in runs]
    except (OSError, ValueError, KeyError) as exc:
        print(f"validation.report: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        if args.update_doc:
            print("validation.report: --update-doc writes the whole corpus's tables; drop --seed", file=sys.stderr)
            return 2
        scored = [s for s in scored if s["spec"].get("seed", 0) == args.seed]
        runs = [Path(s["run"]) for s in scored]
        if not scored:
            print(f"validation.report: {root}: no recorded run with seed {args.seed}", file=sys.stderr)
            return 2
    sweep_dirs = sorted({r.parent for r in runs if r.parent.name.startswith("sweep-")})
    sweeps = [score_sweep(d, scored) for d in sweep_dirs]
    if args.update_doc:
        return update_doc(args.update_doc, root, scored, sweeps)
    print_report(root, scored, sweeps, args.markdown)
    if args.json:
        summary = summarize(scored)
        summary.pop("table")
        summary.pop("end_table")
        args.json.write_text(json.dumps({"summary": summary, "runs": scored, "sweeps": sweeps}, indent=1,
                                        default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
