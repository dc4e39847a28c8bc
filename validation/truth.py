"""The ground-truth rules: what each recorded run's numbers say its regime and the right actions are.

Pure functions of the measurements the recording took (``validation.measure``): the full-train
loss and score at checkpoints, and at each report point two branches trained on for a horizon of
K steps, at the LR in force frozen (``frozen``) and at a tenth of it (``drop``). Nothing here
reads the advisor. docs/validation.md states every rule and every threshold with its reason;
tests/test_validation_truth.py checks each on plain data.

The regime at a report point t, first rule that holds:

1. ``diverged``: the full-train loss at t is not finite, or it is at least ``BLOWUP_FACTOR`` times
   the untrained model's and never comes back under that at a later checkpoint.
2. ``converging``: the full-train loss at t is below ``CONVERGED_LOSS`` (the paper's test), or the
   frozen branch's loss falls: its fitted relative change over the horizon is below
   ``-FALL_MIN`` and the upper end of its 95% interval below 0.
3. ``chance``: the score at t and at every point of the frozen branch is at chance
   (``chance_threshold``): the LR in force learns nothing within the horizon.
4. ``equilibrium``: with 95% confidence the frozen branch's loss falls by less than
   ``STATIONARY_MAX`` over the horizon (the lower end of the interval above -10%).
5. ``unclear``: none of these (too noisy to tell), or the frozen branch itself diverged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The paper's convergence test (Sadrtdinov et al. 2024): full-train loss below 1e-2.
CONVERGED_LOSS = 1e-2
#: Diverged: the full-train loss this many times the untrained model's, for good (DESIGN.md: LR
#: range tests call 4-5x the best loss a divergence; against the *start* it is stricter still).
BLOWUP_FACTOR = 4.0
#: One-sided margin of the chance level, in standard errors of the baseline's own score
#: (3: a label-blind model passes it by sampling noise with probability ~0.13%).
CHANCE_Z = 3.0
#: Converging: the frozen branch's loss falls by more than this over the horizon.
FALL_MIN = 0.02
#: Equilibrium: with 95% confidence the frozen branch's loss falls by less than this.
STATIONARY_MAX = 0.10
#: Dropping the LR (or averaging the weights) pays when it gives a loss this much lower.
PAYS = 0.10
#: Two-sided 97.5% quantiles of Student's t by degrees of freedom (15: a branch's 17 points).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086}
#: Largest lag-1 autocorrelation the interval's widening uses (a curved but clean decline has
#: strongly correlated residuals around its straight-line fit; its slope is not less certain).
MAX_AUTOCORRELATION = 0.9
#: Catapult: the loss rises to at least this many times its lowest value before (floored at
#: ``CATAPULT_FLOOR`` of the untrained loss) and comes back within ``CATAPULT_BACK`` of it.
CATAPULT_FACTOR = 4.0
CATAPULT_FLOOR = 0.05
CATAPULT_BACK = 2.0

REGIMES = ("converging", "equilibrium", "chance", "diverged", "unclear")
JUDGED_ACTIONS = ("drop_lr", "start_averaging", "lower_lr", "rollback")


@dataclass(frozen=True)
class Trend:
    """Fitted relative change of a loss over a span, with its 95% interval (``lo``, ``hi``)."""

    change: float
    lo: float
    hi: float


@dataclass
class Label:
    """The truth at one report point.

    Attributes:
        regime: one of ``REGIMES``.
        why: the rule that decided it, with its numbers.
        trend: the frozen branch's relative change over the horizon (None without a branch).
        drop_pays, averaging_pays: the x0.1 branch / the averaged weights beat the frozen
            branch by ``PAYS`` (None when not measured).
        actions: for each judged action, ``right``, ``wrong`` or ``unclear``.
    """

    regime: str
    why: str
    trend: Trend | None = None
    drop_pays: bool | None = None
    averaging_pays: bool | None = None
    actions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"regime": self.regime, "why": self.why,
                "trend": None if self.trend is None else [self.trend.change, self.trend.lo, self.trend.hi],
                "drop_pays": self.drop_pays, "averaging_pays": self.averaging_pays, "actions": dict(self.actions)}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def chance_threshold(chance: dict[str, Any]) -> float:
    """The score at or below which a model has learned nothing.

    Classifiers and the LM (``metric: acc``): the majority-class share p of the training labels
    (what a label-blind constant guess scores) plus ``CHANCE_Z`` binomial standard errors
    sqrt(p(1-p)/n). Regression (``metric: r2``): a model whose MSE is not below the
    predict-the-mean MSE by ``CHANCE_Z`` standard errors of that MSE (sd of the squared
    deviations / sqrt(n)), as R²: ``CHANCE_Z * square_sd / (sqrt(n) * baseline_mse)``.
    """
    n = float(chance["n"])
    if chance["metric"] == "r2":
        return CHANCE_Z * float(chance["square_sd"]) / (math.sqrt(n) * float(chance["baseline_mse"]))
    p = float(chance["majority_share"])
    return p + CHANCE_Z * math.sqrt(p * (1 - p) / n)


def trend(steps: Sequence[float], losses: Sequence[float]) -> Trend | None:
    """Relative change of ``losses`` over the span of ``steps`` from a least-squares line on
    log(loss), with a 95% t interval widened for lag-1 autocorrelation of the residuals
    (factor sqrt((1+r)/(1-r)), r clipped to [0, ``MAX_AUTOCORRELATION``]).

    None when a loss is not finite or not positive, or there are fewer than 3 points.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if len(x) < 3 or len(x) != len(y) or not np.isfinite(y).all() or (y <= 0).any() or np.ptp(x) == 0:
        return None
    y = np.log(y)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * xc
    dof = len(x) - 2
    s2 = float(resid @ resid) / dof
    se = math.sqrt(s2 / sxx)
    ss = float(resid @ resid)
    r1 = float(resid[:-1] @ resid[1:]) / ss if ss > 0 else 0.0
    r1 = min(max(r1, 0.0), MAX_AUTOCORRELATION)
    se *= math.sqrt((1 + r1) / (1 - r1))
    q = T_975.get(dof, 1.96)
    span = float(np.ptp(x))
    return Trend(math.expm1(slope * span), math.expm1((slope - q * se) * span), math.expm1((slope + q * se) * span))


def diverged_at(t: int, checkpoint_steps: Sequence[int], checkpoint_losses: Sequence[float]) -> bool:
    """Rule 1: at step ``t`` the full-train loss is not finite, or it is at least
    ``BLOWUP_FACTOR`` x the first checkpoint's (the untrained model) and never comes back below
    that at any later checkpoint."""
    losses = list(checkpoint_losses)
    steps = list(checkpoint_steps)
    if not steps or t not in steps:
        raise ValueError(f"step {t} is not a checkpoint")
    start = losses[0]
    limit = BLOWUP_FACTOR * start if _finite(start) else math.inf
    i = steps.index(t)
    if not _finite(losses[i]):
        return True
    return all(not _finite(v) or v >= limit for v in losses[i:])


def catapults(checkpoint_steps: Sequence[int], checkpoint_losses: Sequence[float]) -> list[dict[str, Any]]:
    """Loss spikes that recovered: the loss rises to ``CATAPULT_FACTOR`` x its lowest value so far
    (that low floored at ``CATAPULT_FLOOR`` x the untrained loss, so noise near zero is no spike)
    and later falls back within ``CATAPULT_BACK`` x that low. Returns one dict per spike
    (``start``, ``peak_step``, ``peak_factor``, ``end``); a spike that never recovers is not in it.
    """
    steps, losses = list(checkpoint_steps), list(checkpoint_losses)
    if not losses or not _finite(losses[0]):
        return []
    floor = CATAPULT_FLOOR * losses[0]
    out: list[dict[str, Any]] = []
    low = losses[0]
    i = 1
    while i < len(losses):
        v = losses[i]
        base = max(low, floor)
        if _finite(v) and v >= CATAPULT_FACTOR * base:
            j, peak = i, i
            while j < len(losses) and not (_finite(losses[j]) and losses[j] <= CATAPULT_BACK * base):
                if _finite(losses[j]) and losses[j] > losses[peak]:
                    peak = j
                j += 1
            if j == len(losses):
                break  # never recovered: not a catapult
            out.append({"start": steps[i], "peak_step": steps[peak], "peak_factor": losses[peak] / base,
                        "end": steps[j]})
            i = j
            continue
        if _finite(v):
            low = min(low, v)
        i += 1
    return out


def _second_half(values: Sequence[float]) -> list[float]:
    return list(values)[len(values) // 2:]


def drop_pays(frozen: dict[str, Any], drop: dict[str, Any]) -> bool | None:
    """Does dropping the LR x0.1 pay? Every full-train loss of the drop branch's second half is
    at least ``PAYS`` below every one of the frozen branch's second half (9 points each: complete
    separation by chance has probability 1/C(18,9) = 2e-5 if the two were alike). None when the
    frozen branch is not finite (a non-finite drop branch does not pay)."""
    f, d = _second_half(frozen["loss"]), _second_half(drop["loss"])
    if not f or not all(_finite(v) for v in f):
        return None
    if not all(_finite(v) for v in d):
        return False
    return max(d) <= (1 - PAYS) * min(f)


def averaging_pays(frozen: dict[str, Any]) -> bool | None:
    """Does averaging the weights pay? The full-train loss of the equal-weight average of the
    frozen branch's second-half weights is at least ``PAYS`` below every loss of that half."""
    f = _second_half(frozen["loss"])
    avg = frozen.get("averaged_loss")
    if not f or not all(_finite(v) for v in f):
        return None
    if not _finite(avg):
        return False
    return avg <= (1 - PAYS) * min(f)


def regime(point: dict[str, Any], checkpoint_steps: Sequence[int], checkpoint_losses: Sequence[float],
           chance_level: float) -> tuple[str, str, Trend | None]:
    """The regime at one report point by rules 1-5 (module docstring): (regime, why, trend)."""
    t, loss = point["step"], point["loss"]
    if diverged_at(t, checkpoint_steps, checkpoint_losses):
        start = checkpoint_losses[0]
        return "diverged", (f"full-train loss {loss:.3g} not finite" if not _finite(loss) else
                            f"full-train loss {loss:.3g} >= {BLOWUP_FACTOR:g} x start {start:.3g} to the end"), None
    frozen = point.get("frozen")
    if loss < CONVERGED_LOSS:
        return "converging", f"full-train loss {loss:.3g} < {CONVERGED_LOSS:g}", None
    if frozen is None:
        return "unclear", "no branch", None
    if not all(_finite(v) for v in frozen["loss"]):
        return "unclear", "the LR in force, held, diverges", None
    tr = trend(frozen["steps"], frozen["loss"])
    if tr is None:
        return "unclear", "no trend", None
    span = f"over {frozen['steps'][-1]} steps at the LR in force: {tr.change:+.1%} [{tr.lo:+.1%}, {tr.hi:+.1%}]"
    if tr.change < -FALL_MIN and tr.hi < 0:
        return "converging", f"loss falls {span}", tr
    scores = [point["score"], *frozen["score"]]
    if all(_finite(s) and s <= chance_level for s in scores):
        return "chance", f"score <= chance {chance_level:.3g} throughout; {span}", tr
    if tr.lo > -STATIONARY_MAX:
        return "equilibrium", f"loss stationary {span}", tr
    return "unclear", f"too noisy {span}", tr


def action_truth(action: str, regime_name: str, pays: bool | None, *, frozen_diverges: bool = False,
                 rollback_target_healthy: bool | None = None) -> str:
    """``right``, ``wrong``, ``early`` or ``unclear`` for one action at a report point.

    - ``drop_lr`` / ``start_averaging``: right at ``equilibrium`` when it pays (``drop_pays`` /
      ``averaging_pays``); ``early`` when the loss is still converging at the LR in force but it
      would pay already (not right: the loss has not stopped falling; not wrong: acting pays);
      wrong when converging and it does not pay, at chance, diverged, or at an equilibrium where
      it does not pay.
    - ``lower_lr``: right when diverged, at chance, or when the LR in force, held, diverges; wrong
      when converging or at equilibrium.
    - ``rollback``: as ``lower_lr``, and wrong when its target step was not healthy (loss not
      finite or blown up there).
    """
    if action in ("drop_lr", "start_averaging"):
        if regime_name == "converging" and pays:
            return "early"
        if regime_name in ("converging", "chance", "diverged"):
            return "wrong"
        if regime_name == "equilibrium":
            return "unclear" if pays is None else ("right" if pays else "wrong")
        return "unclear"
    if action in ("lower_lr", "rollback"):
        if regime_name in ("diverged", "chance") or frozen_diverges:
            if action == "rollback" and rollback_target_healthy is False:
                return "wrong"
            return "right"
        if regime_name in ("converging", "equilibrium"):
            return "wrong"
        return "unclear"
    raise ValueError(f"action {action!r} is not judged")


def label_point(point: dict[str, Any], checkpoint_steps: Sequence[int], checkpoint_losses: Sequence[float],
                chance_level: float) -> Label:
    """The full label of one report point: regime, whether dropping/averaging pays, and the
    verdict on each judged action (rollback's target is judged by the report, which knows it)."""
    name, why, tr = regime(point, checkpoint_steps, checkpoint_losses, chance_level)
    frozen, drop = point.get("frozen"), point.get("drop")
    dp = drop_pays(frozen, drop) if frozen and drop else None
    ap = averaging_pays(frozen) if frozen else None
    frozen_diverges = bool(frozen) and not all(_finite(v) for v in frozen["loss"])
    label = Label(name, why, tr, dp, ap)
    label.actions = {
        "drop_lr": action_truth("drop_lr", name, dp),
        "start_averaging": action_truth("start_averaging", name, ap),
        "lower_lr": action_truth("lower_lr", name, None, frozen_diverges=frozen_diverges),
        "rollback": action_truth("rollback", name, None, frozen_diverges=frozen_diverges),
    }
    return label


def healthy_before(step: int, checkpoint_steps: Sequence[int], checkpoint_losses: Sequence[float]) -> bool | None:
    """Was the run healthy at the last checkpoint at or before ``step`` (finite full-train loss
    below ``BLOWUP_FACTOR`` x the start)? None when no checkpoint is that early."""
    best: float | None = None
    for s, v in zip(checkpoint_steps, checkpoint_losses):
        if s <= step:
            best = v
    if best is None:
        return None
    start = checkpoint_losses[0]
    return _finite(best) and (not _finite(start) or best < BLOWUP_FACTOR * start)


def label_run(truth: dict[str, Any]) -> dict[str, Any]:
    """Labels of every report point of a recorded run (``truth.json``'s measurements), its
    catapults, and its chance level: ``{"chance_level", "points": [...], "catapults": [...]}``."""
    cp = truth["checkpoints"]
    level = chance_threshold(truth["chance"])
    points = [{"name": p["name"], "step": p["step"], "phase": p.get("phase"),
               **label_point(p, cp["step"], cp["loss"], level).to_json()} for p in truth["points"]]
    return {"chance_level": level, "points": points, "catapults": catapults(cp["step"], cp["loss"])}
