"""What each of the four charts shows for a run (or a sweep's overlay), from its curves."""

from __future__ import annotations

from dataclasses import dataclass

from lrtui.app.chart import ChartSpec, Series
from lrtui.app.curves import Curve
from lrtui.app.run_curves import ChartCurves

#: Colours of the loss curves of a sweep overlay and of LR groups (named ANSI colours).
CYCLE = ("green", "magenta", "blue", "red", "cyan", "yellow", "bright_green", "bright_magenta")
#: Chart ids on the screen, top to bottom.
CHART_IDS = ("loss-chart", "grad-chart", "sharpness-chart", "lr-chart")
_TITLES = ("loss", "gradient norm", "sharpness", "learning rate")


@dataclass
class Overlaid:
    """One run of a sweep on the overlay: its label (the LR) and its smoothed loss."""

    label: str
    loss: Curve


def chart_specs(curves: ChartCurves | None, x_range: tuple[float, float], *, log: bool, smoothing: int,
                overlay: list[Overlaid] | None = None, waiting: str = "waiting for steps",
                actions: list[float] | None = None, actions_label: str = "action") -> list[ChartSpec]:
    """The specs of the loss, gradient norm, sharpness and LR charts, top to bottom.

    Without curves (a run not started, or not read yet) each chart is drawn as an empty frame
    saying ``waiting``. With ``overlay`` the loss chart shows every run of the sweep.
    ``actions``: the steps of the run's ``action`` events, markers on the LR chart (named
    ``actions_label`` in its legend).
    """
    if curves is None:
        return [ChartSpec(title, [], x_range, log and title != "learning rate", waiting, start_at_data=True)
                for title in _TITLES]
    window = "unsmoothed" if smoothing == 1 else f"mean of last {smoothing} steps"
    if overlay:
        series = [Series(o.loss, CYCLE[i % len(CYCLE)], o.label, mark_non_finite=True) for i, o in enumerate(overlay)]
        loss = ChartSpec("loss, sweep by LR", series, x_range, log, window, start_at_data=True)
    else:
        loss = ChartSpec("loss", [
            Series(curves.loss, "bright_black", "raw", mark_non_finite=True, robust_low=True),
            Series(curves.loss_smooth, "green", "smoothed"),
        ], x_range, log, window, start_at_data=True)
    grad = ChartSpec("gradient norm", [Series(curves.grad_norm, "magenta", "", mark_non_finite=True)],
                     x_range, log, start_at_data=True)
    sharp_series = [Series(c, CYCLE[(k + 2) % len(CYCLE)], method, mark_non_finite=True)
                    for k, (method, c) in enumerate(curves.sharpness.items())]
    if curves.threshold is not None:
        sharp_series.append(Series(curves.threshold, "red", "stability threshold", reference=True))
    sharp = ChartSpec("sharpness", sharp_series, x_range, log, "" if curves.sharpness else "not measured",
                      start_at_data=True)
    lr_series = [Series(c, CYCLE[g % len(CYCLE)], f"group {g}" if len(curves.lr) > 1 else "")
                 for g, c in enumerate(curves.lr)]
    lr = ChartSpec("learning rate", lr_series, x_range, False, start_at_data=True, markers=list(actions or []),
                   marker_label=actions_label)
    return [loss, grad, sharp, lr]


__all__ = ["CHART_IDS", "CYCLE", "Overlaid", "chart_specs"]
