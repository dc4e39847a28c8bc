"""What the advisor says: alerts, recommendations (in force, withdrawn, done), phases and the overall state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lrtui.runlog.numbers import json_number

#: Regimes in the paper's meaning (Sadrtdinov et al. 2024), plus ``warmup`` (too little data yet).
REGIMES = ("warmup", "converging", "equilibrium", "chance", "diverged")
#: What a recommendation asks for.
ACTIONS = ("drop_lr", "start_averaging", "lower_lr", "rollback", "raise_lr")


@dataclass(frozen=True)
class Alert:
    """Something the user should know now.

    Attributes:
        severity: ``info``, ``warning`` or ``error``.
        step: the optimizer step it refers to.
        message: one line.
    """

    severity: str
    step: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "step": self.step, "message": self.message}


@dataclass(frozen=True)
class Recommendation:
    """An action, the step at which it was decided, why, and the numbers behind it.

    Attributes:
        action: one of ``ACTIONS``.
        step: the optimizer step at which the advisor decided it.
        reason: one or two sentences with the numbers.
        numbers: e.g. ``new_lr``, ``current_lr``, ``to_step``, ``averaging_steps``.
    """

    action: str
    step: int | None
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "step": self.step, "reason": self.reason}
        out.update(json_number(self.numbers))
        return out


@dataclass(frozen=True)
class Withdrawn:
    """A recommendation later evidence contradicted: when (``withdrawn_at_step``) and why."""

    recommendation: Recommendation
    withdrawn_at_step: int | None
    why: str
    phase: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.recommendation.to_json() | {"withdrawn_at_step": self.withdrawn_at_step, "why": self.why}


@dataclass(frozen=True)
class Done:
    """A recommendation the run followed: from ``done_at_step`` on, and how."""

    recommendation: Recommendation
    done_at_step: int | None
    how: str
    phase: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.recommendation.to_json() | {"done_at_step": self.done_at_step, "how": self.how}


@dataclass
class Segment:
    """A phase of the run, judged on its own: a constant LR, or a schedule's moving LR (``phases.py``).

    Attributes:
        start_step, end_step: first and last logged optimizer step of the phase.
        lr, lr_end: the learning rate (group 0) at its first and at its last logged step.
        peak_lr: the largest LR (group 0) logged in it so far: under a warm-up or a OneCycle the
            LR it rose to, at a constant LR that LR. A run's initial LR is its first phase's.
        cause: what started it: ``start`` (the run's first step), ``jump`` (the LR jumped: a step
            schedule or a manual change) or ``action`` (an applied ``set_lr``/``drop_lr``).
        warmup_end_step: the first step after its warm-up (the LR rose at its start), or None.
        regime: its regime (see ``REGIMES``); ``warmup`` while its LR still rises or too little
            is logged yet.
        logged_steps: how many step events it holds.
        loss_level: mean loss over the window of the last regime test (None before the first).
        relative_change: the loss's relative change across that window (negative = falling),
            ``change_interval`` its 90% confidence interval, ``lr_change`` the LR's relative
            change across it (0 at a constant LR), ``window`` its [first, last] optimizer step.
        converged_by: ``"train_loss"`` (batch-loss mean < the convergence level) or
            ``"full_train_loss"`` (a logged full-train loss below it), when converged.
    """

    start_step: int
    end_step: int
    lr: float
    regime: str = "warmup"
    logged_steps: int = 0
    loss_level: float | None = None
    relative_change: float | None = None
    change_interval: tuple[float, float] | None = None
    window: tuple[int, int] | None = None
    converged_by: str | None = None
    lr_end: float | None = None
    cause: str = "start"
    warmup_end_step: int | None = None
    lr_change: float | None = None
    peak_lr: float | None = None

    def to_json(self) -> dict[str, Any]:
        return json_number({
            "start_step": self.start_step,
            "end_step": self.end_step,
            "lr": self.lr,
            "lr_end": self.lr_end,
            "peak_lr": self.peak_lr,
            "cause": self.cause,
            "warmup_end_step": self.warmup_end_step,
            "regime": self.regime,
            "logged_steps": self.logged_steps,
            "loss_level": self.loss_level,
            "relative_change": self.relative_change,
            "change_interval": list(self.change_interval) if self.change_interval else None,
            "lr_change": self.lr_change,
            "window": list(self.window) if self.window else None,
            "converged_by": self.converged_by,
        })


@dataclass
class AdvisorState:
    """The advisor's verdict at one moment: everything the app draws and ``advise`` prints.

    Attributes:
        step: last logged optimizer step (None before any).
        regime: regime of the current segment, or ``diverged``.
        lr: learning rate of param group 0 now; ``lrs`` has every group.
        sharpness: latest sharpness comparable with the threshold, measured at ``sharpness_step``
            with ``sharpness_method`` (``hessian``, ``batch`` or ``preconditioned``).
        sharpness_threshold: the stability threshold at ``lr`` (see ``threshold.py``).
        stability_ratio: sharpness / threshold.
        max_stable_lr: the largest LR stable at this sharpness.
        edge: ``below``, ``at_edge`` or ``above`` (band ±``EDGE_BAND``); None when unknown.
        diverged_at_step: the step where the divergence began; ``divergence_flagged_at_step`` when
            it was detected; ``divergence_reason`` in words.
        in_warmup: the LR of the phase now going on still rises (its regime is ``warmup``); then
            ``warmup_headroom`` = ``max_stable_lr`` / ``lr``: how far the LR may still rise at
            the sharpness last measured (None without a sharpness).
        alerts: everything raised so far, oldest first.
        recommendations: those in force at ``step``, oldest first; ``withdrawn``: those later
            evidence contradicted (each with ``withdrawn_at_step`` and ``why``); ``done``: those
            the run followed (each with ``done_at_step`` and ``how``).
        segments: the run's phases so far (``Segment``).
        loss_level: mean loss of the current segment's last test window.
        catapults: loss spikes that recovered (the first few are also alerts).
        ended: the run wrote its end record (``end_status`` finished or failed).
    """

    step: int | None = None
    regime: str = "warmup"
    lr: float | None = None
    lrs: list[float] = field(default_factory=list)
    sharpness: float | None = None
    sharpness_method: str | None = None
    sharpness_step: int | None = None
    sharpness_threshold: float | None = None
    stability_ratio: float | None = None
    max_stable_lr: float | None = None
    edge: str | None = None
    diverged_at_step: int | None = None
    divergence_flagged_at_step: int | None = None
    divergence_reason: str | None = None
    alerts: list[Alert] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    withdrawn: list[Withdrawn] = field(default_factory=list)
    done: list[Done] = field(default_factory=list)
    in_warmup: bool = False
    warmup_headroom: float | None = None
    segments: list[Segment] = field(default_factory=list)
    loss_level: float | None = None
    optimizer: str | None = None
    convergence_threshold_lr: float | None = None
    logged_steps: int = 0
    catapults: int = 0
    ended: bool = False
    end_status: str | None = None

    @property
    def diverged(self) -> bool:
        return self.regime == "diverged"

    def to_json(self, run_name: str | None = None) -> dict[str, Any]:
        """The ``lrtui advise --json`` object for one run (docs/advisor.md); null where unknown."""
        return {
            "run": run_name,
            "step": self.step,
            "regime": self.regime,
            "lr": json_number(self.lr),
            "lrs": json_number(self.lrs),
            "optimizer": self.optimizer,
            "sharpness": json_number(self.sharpness),
            "sharpness_method": self.sharpness_method,
            "sharpness_step": self.sharpness_step,
            "sharpness_threshold": json_number(self.sharpness_threshold),
            "stability_ratio": json_number(self.stability_ratio),
            "max_stable_lr": json_number(self.max_stable_lr),
            "edge": self.edge,
            "diverged_at_step": self.diverged_at_step,
            "divergence_flagged_at_step": self.divergence_flagged_at_step,
            "divergence_reason": self.divergence_reason,
            "loss_level": json_number(self.loss_level),
            "convergence_threshold_lr": json_number(self.convergence_threshold_lr),
            "logged_steps": self.logged_steps,
            "catapults": self.catapults,
            "ended": self.ended,
            "end_status": self.end_status,
            "alerts": [a.to_json() for a in self.alerts],
            "in_warmup": self.in_warmup,
            "warmup_headroom": json_number(self.warmup_headroom),
            "recommendations": [r.to_json() for r in self.recommendations],
            "withdrawn": [w.to_json() for w in self.withdrawn],
            "done": [d.to_json() for d in self.done],
            "segments": [s.to_json() for s in self.segments],
        }


__all__ = ["ACTIONS", "REGIMES", "Alert", "AdvisorState", "Done", "Recommendation", "Segment", "Withdrawn",
           "json_number"]
