"""A sweep: runs that differ in initial LR — their regimes, the convergence threshold, the best band.

Each run is classified by its first segment (pre-training at its initial LR). A run *converged* when
that segment reached the convergence level (mean train loss, or a logged full-train loss, below
1e-2: the paper's test); one still falling at the end of its budget did not, while one still
running and falling is undecided (it may converge yet: ``summarize_sweep``'s ``running``). The
convergence threshold lies between the largest LR that converged and the smallest LR above it
that did not; the estimate is their geometric mean. The recommended initial-LR band is
``initial_lr_band`` of it (slightly above the threshold, the paper's sub-regime 2A), but never
reaching an LR that in the same sweep was ``chance`` or ``diverged``: it stops below the smallest
such LR (half-open, [lo, hi)), and ``recommended_initial_lr_capped_by`` names that run. Where runs log
a ``metric`` with ``phase`` ``finetune`` or ``swa`` and ``test_acc``, the LR whose last such
accuracy is highest won, and the result says whether that LR lies in the recommended band: the band is the paper's finding,
the winner is this sweep's own evidence, and where they disagree the user sees both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from lrtui.advisor.advisor import Advisor
from lrtui.advisor.recommend import initial_lr_band
from lrtui.advisor.state import AdvisorState
from lrtui.runlog.run import planned_lr
from lrtui.runlog.numbers import json_number

#: Pre-training regimes of a run that failed: the recommended band stops below its LR.
FAILED = ("chance", "diverged")
#: Phases of the second stage whose test accuracy says which initial LR won.
SECOND_PHASES = ("finetune", "swa")


@dataclass
class SweepRun:
    """One run of a sweep: its name, initial LR, pre-training regime, state and second-phase results."""

    name: str
    initial_lr: float | None
    pretrain_regime: str
    state: AdvisorState
    test_acc: dict[str, float] = field(default_factory=dict)  # phase -> last test_acc
    converged: bool = False  # pre-training reached the convergence level

    def to_json(self) -> dict[str, Any]:
        out = self.state.to_json(self.name)
        out["initial_lr"] = json_number(self.initial_lr)
        out["pretrain_regime"] = self.pretrain_regime
        out["converged"] = self.converged
        out["test_acc"] = {p: json_number(self.test_acc.get(p)) for p in ("pretrain",) + SECOND_PHASES}
        return out


@dataclass
class SweepResult:
    """What a sweep says about the initial LR."""

    runs: list[SweepRun]
    convergence_threshold_lr: float | None
    threshold_interval: tuple[float | None, float | None]
    recommended_initial_lr: tuple[float, float] | None
    best: dict[str, dict[str, Any]]  # phase -> {"run", "lr", "test_acc"}
    inconsistent: list[str]  # runs that converged above an LR that did not
    capped_by: dict[str, Any] | None = None  # the failed run that capped the band: run, lr, regime, step

    def winner_in_band(self, phase: str) -> bool | None:
        """Whether the LR that won ``phase`` lies in the recommended band (None: unknown)."""
        best = self.best.get(phase)
        if best is None or self.recommended_initial_lr is None or best.get("lr") is None:
            return None
        lo, hi = self.recommended_initial_lr
        return bool(lo <= best["lr"] <= hi)

    def headline(self) -> str:
        """The sweep's verdict in one line: threshold, band, winners (the app's runs list and
        ``advise --follow`` show it)."""
        lo, hi = self.threshold_interval
        if self.convergence_threshold_lr is not None and self.recommended_initial_lr is not None:
            a, b = self.recommended_initial_lr
            text = (f"convergence threshold ≈ {self.convergence_threshold_lr:.3g} (between {lo:.3g} and "
                    f"{hi:.3g}); recommended initial lr {a:.3g} .. {b:.3g}")
        else:
            text = "convergence threshold not known yet" + (f" (converged up to lr {lo:.3g})" if lo is not None else "")
        for phase, best in self.best.items():
            lr = "?" if best.get("lr") is None else format(best["lr"], ".3g")
            text += f"; best after {phase}: lr {lr} ({best['run']}), test_acc {best['test_acc']:.4f}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.to_json() for r in self.runs], **self.verdict_json()}

    def verdict_json(self) -> dict[str, Any]:
        """The sweep's own fields of ``to_json``: all but the runs."""
        return {
            "convergence_threshold_lr": json_number(self.convergence_threshold_lr),
            "convergence_threshold_interval": json_number(list(self.threshold_interval)),
            "recommended_initial_lr": json_number(list(self.recommended_initial_lr))
            if self.recommended_initial_lr else None,
            "best": {p: json_number(v) | {"in_recommended_band": self.winner_in_band(p)}
                     for p, v in self.best.items()},
            "inconsistent_runs": list(self.inconsistent),
            "recommended_initial_lr_capped_by": json_number(self.capped_by),
        }


def _initial_lr(meta: dict[str, Any], state: AdvisorState) -> float | None:
    """A run's initial LR: the largest its first phase logged (a warm-up's or OneCycle's peak,
    not its first value), else what its metadata plans."""
    if state.segments and state.segments[0].peak_lr is not None:
        return state.segments[0].peak_lr
    return planned_lr(meta)


def _last_test_acc(metric_events: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in metric_events:
        phase, acc = e.get("phase"), e.get("test_acc")
        if isinstance(phase, str) and isinstance(acc, (int, float)) and not isinstance(acc, bool):
            if math.isfinite(acc):
                out[phase] = float(acc)
    return out


def analyze_sweep(runs: Iterable[tuple[dict[str, Any], Any]], running: Iterable[bool] | None = None) -> SweepResult:
    """Classify each run and estimate the convergence threshold and the best initial-LR band.

    Args:
        runs: (meta, events) pairs, where events is a list of event dicts or a ``RunData``.
        running: per run, whether it is still going (see ``summarize_sweep``).
    """
    pairs = list(runs)
    flags = list(running) if running is not None else None
    result = summarize_sweep([_advised(meta, events, None) for meta, events in pairs], flags)
    if result.convergence_threshold_lr is None:
        return result
    # Once the sweep knows its threshold, each run's advice uses it (raise_lr and lower_lr aim
    # into the band, drop_lr goes at least down to it): a second pass. The threshold only moves
    # these numbers, not a regime, so the sweep's verdict is the same.
    return summarize_sweep([_advised(meta, events, result.convergence_threshold_lr) for meta, events in pairs],
                           flags)


def _advised(meta: dict[str, Any], events: Any, threshold: float | None) -> tuple[dict[str, Any], AdvisorState,
                                                                                  list[dict[str, Any]]]:
    adv = Advisor(meta, convergence_threshold_lr=threshold)
    if hasattr(events, "table"):
        adv.update_data(events)
    else:
        adv.update_many(events)
        adv.flush()
    return meta, adv.state(), adv.metric_events


def summarize_sweep(runs: Iterable[tuple[dict[str, Any], AdvisorState, list[dict[str, Any]]]],
                    running: Iterable[bool] | None = None) -> SweepResult:
    """The sweep's verdict from its runs' advisor states (so far, when they are live).

    Args:
        runs: (meta, the advisor's state, the run's ``metric`` events that advisor has read) per run.
        running: per run, whether it is still going. A running run whose pre-training is still
            open and has no stationary verdict (``warmup`` or ``converging``, not yet at the
            convergence level) is undecided: it may still converge, so it bounds the threshold
            neither way. Without it every run is judged on what it logged (a run still falling at
            the end of its budget did not converge).
    """
    entries = list(runs)
    still = list(running) if running is not None else [False] * len(entries)
    first: list[tuple[float, bool, SweepRun]] = []
    out_runs: list[SweepRun] = []
    for (meta, st, metric_events), live in zip(entries, still):
        name = str(meta.get("name") or meta.get("run_id") or f"run{len(out_runs)}")
        lr = _initial_lr(meta, st)
        pre = st.segments[0].regime if st.segments else "warmup"
        run = SweepRun(name, lr, pre, st, _last_test_acc(metric_events))
        out_runs.append(run)
        run.converged = bool(st.segments and st.segments[0].converged_by is not None)
        undecided = live and len(st.segments) <= 1 and pre in ("warmup", "converging")
        if lr is not None and (run.converged or (pre != "warmup" and not undecided)):
            first.append((lr, run.converged, run))
    converged = [lr for lr, conv, _ in first if conv]
    lo = max(converged) if converged else None
    not_conv = [lr for lr, conv, _ in first if not conv and (lo is None or lr > lo)]
    hi = min(not_conv) if not_conv else None
    inconsistent = [r.name for lr, conv, r in first if not conv and lo is not None and lr < lo]
    threshold = math.sqrt(lo * hi) if lo is not None and hi is not None else None
    band = initial_lr_band(threshold) if threshold is not None else None
    capped_by = None
    if band is not None:
        # the band never holds an LR that failed in this sweep: it stops below the smallest one
        failed = [(lr, r) for lr, _, r in first if r.pretrain_regime in FAILED and lr > band[0]]
        if failed:
            lr, r = min(failed, key=lambda t: t[0])
            if lr <= band[1]:
                band = (band[0], lr)
                capped_by = {"run": r.name, "lr": lr, "regime": r.pretrain_regime, "step": _failed_at(r.state)}
    best: dict[str, dict[str, Any]] = {}
    for phase in SECOND_PHASES:
        scored = [(r.test_acc[phase], r) for r in out_runs if phase in r.test_acc]
        if scored:
            acc, r = max(scored, key=lambda t: t[0])
            best[phase] = {"run": r.name, "lr": r.initial_lr, "test_acc": acc}
    out_runs.sort(key=lambda r: (r.initial_lr is None, r.initial_lr or 0.0, r.name))
    return SweepResult(out_runs, threshold, (lo, hi), band, best, inconsistent, capped_by)


def _failed_at(st: AdvisorState) -> int | None:
    """The step at which a failed run was judged so (diverged, or confirmed at chance)."""
    if st.divergence_flagged_at_step is not None:
        return st.divergence_flagged_at_step
    return next((a.step for a in st.alerts if a.message.startswith("regime chance")), None)


__all__ = ["SweepResult", "SweepRun", "analyze_sweep", "summarize_sweep"]
