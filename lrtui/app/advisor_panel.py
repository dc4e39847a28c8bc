"""The advisor's state as text: the side panel (fitted to its size, the most important first) and
the full advice screen (``a``)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from lrtui.advisor import AdvisorState, Done, Recommendation
from lrtui.advisor.words import edge_words, stability_words
from lrtui.app.chart import MARKER, MARKER_STYLE, format_number

REGIME_STYLES = {
    "warmup": "dim",
    "converging": "green",
    "equilibrium": "yellow",
    "chance": "magenta",
    "diverged": "bold red",
}
EDGE_STYLES = {"below": "green", "at_edge": "yellow", "above": "bold red"}
#: What the panel says when it had to leave something out.
MORE_HINT = "a: all of the advice"


def number(value: float | list[float] | None) -> str:
    """A state's number as the panel shows it (``-`` when unknown)."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(number(v) for v in value)
    try:
        return format_number(float(value))
    except (TypeError, ValueError):
        return str(value)


def action_line(rec: Recommendation) -> str:
    """``→ drop lr to 8.1e-4 @ 1,832``: what to do, to what, decided when."""
    line = f"→ {rec.action.replace('_', ' ')}"
    new_lr = rec.numbers.get("new_lr") if isinstance(rec.numbers, dict) else None
    if new_lr is not None:
        line += f" to {number(new_lr)}"
    if isinstance(rec.step, int):
        line += f" @ {rec.step:,}"
    return line


#: What a recommendation the run followed is called once done.
DONE_WORDS = {"drop_lr": "LR dropped", "lower_lr": "LR lowered", "raise_lr": "LR raised", "set_lr": "LR set",
              "start_averaging": "averaging started", "rollback": "rolled back"}


def done_line(done: Done) -> str:
    """``✓ averaging started @ 10,000``: a recommendation the run followed, and from when."""
    action = done.recommendation.action
    at = done.done_at_step
    return f"✓ {DONE_WORDS.get(action, action.replace('_', ' ') + ' done')}" + (f" @ {at:,}" if isinstance(at, int) else "")


def _alerts(state: AdvisorState) -> list[tuple[str, str]]:
    # Info alerts repeat what the lines above say; warnings and errors are shown, newest last.
    out = []
    for alert in state.alerts:
        if alert.severity != "info":
            where = f" @ {alert.step:,}" if isinstance(alert.step, int) else ""
            out.append((f"! {alert.message}{where}", "bold red" if alert.severity == "error" else "yellow"))
    return out


@dataclass
class _Block:
    """Lines that belong together, kept or cut as the panel's height allows."""

    lines: list[tuple[str, str, int]]  # (text, style, how many leading characters are unstyled)
    priority: int  # 0 is always shown; higher is left out first
    shrinks: bool = False  # may be cut to fewer lines (ending in …) rather than left out
    kept: int = 0


def _wrap(text: str, style: str, width: int, indent: str = "", label: str = "") -> list[tuple[str, str, int]]:
    """``label + text`` wrapped to ``width`` (later lines indented by ``indent``); the label is
    not styled."""
    if width <= len(indent) + 4:
        return [(label + text, style, len(label))]
    lines = textwrap.wrap(label + text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]
    return [(line, style, len(label) if i == 0 else 0) for i, line in enumerate(lines)]


def taken_line(event: dict[str, Any], width: int = 0) -> str:
    """``┊ drop lr @ 300 (app)``: an action the run took (an ``action`` event), as on the LR
    chart; who took it only where it fits ``width`` (0: always)."""
    action = str(event.get("action", "?")).replace("_", " ")
    step = event.get("step")
    line = f"{MARKER} {action}" + (f" @ {step:,}" if isinstance(step, int) else "")
    source = f" ({event.get('source', '?')})"
    return line + source if not width or len(line + source) <= width else line


def actions_label(taken: list[dict[str, Any]]) -> str:
    """The LR chart's legend for its action markers: the action when there is one, else how many."""
    if len(taken) == 1:
        return taken_line(taken[0], 1)[2:]
    return f"{len(taken)} actions"


def _blocks(state: AdvisorState, error: str | None, width: int, notes: list[tuple[str, str]],
            taken: list[dict[str, Any]]) -> list[_Block]:
    """The panel's content in display order, each piece with its priority."""
    blocks = [_Block(_wrap(text, style, width, "  "), 0, shrinks=True) for text, style in notes]
    blocks.append(_Block(_wrap(state.regime, REGIME_STYLES.get(state.regime, "bold"), width, label="regime  "), 0))
    if state.diverged_at_step is not None:
        blocks.append(_Block(_wrap(f"DIVERGED at step {state.diverged_at_step:,}", "bold red", width), 0))
    blocks.append(_Block(_wrap(number(state.lr), "", width, label="LR      "), 1))
    method = f" ({state.sharpness_method})" if state.sharpness_method else ""
    blocks.append(_Block(_wrap(f"{number(state.sharpness)} / {number(state.sharpness_threshold)}{method}", "",
                               width, " " * 8, label="sharp.  "), 1))
    if state.stability_ratio is not None or state.edge:
        ratio = f"{state.stability_ratio:.2f}x " if state.stability_ratio is not None else ""
        edge = edge_words(state.edge, short=True) if state.edge else ""
        blocks.append(_Block(_wrap(edge, EDGE_STYLES.get(str(state.edge), ""), width, " " * 8,
                                   label=f"ratio   {ratio}"), 1))
    blocks.append(_Block(_wrap(number(state.max_stable_lr), "", width, label="max stable LR "), 3))
    for rec in state.recommendations:
        blocks.append(_Block(_wrap(action_line(rec), "bold cyan", width, "  "), 0))
        if rec.reason:
            blocks.append(_Block(_wrap(rec.reason, "dim", width - 2), 2, shrinks=True))
            blocks[-1].lines = [("  " + t, s, 0) for t, s, _ in blocks[-1].lines]
    for done in state.done:
        blocks.append(_Block(_wrap(done_line(done), "green", width, "  "), 2))
    for event in taken[-2:]:
        blocks.append(_Block(_wrap(taken_line(event, width), MARKER_STYLE, width, "  "), 2))
    for alert, style in _alerts(state)[-3:]:
        blocks.append(_Block(_wrap(alert, style, width, "  "), 3, shrinks=True))
    if error:
        blocks.append(_Block(_wrap(error, "dim", width), 1, shrinks=True))
    return blocks


def _fit(blocks: list[_Block], room: float) -> bool:
    """Choose how many lines of each block to keep in ``room`` lines; True when all fit.

    By priority: whole blocks that cannot shrink while they fit, then the lines of those that
    can, shared out one at a time in order, so each gets its first lines first."""
    for block in blocks:
        block.kept = 0
    for priority in sorted({b.priority for b in blocks}):
        level = [b for b in blocks if b.priority == priority]
        for b in level:
            if not b.shrinks and len(b.lines) <= room:
                b.kept, room = len(b.lines), room - len(b.lines)
        shrinking = [b for b in level if b.shrinks]
        while room > 0 and any(b.kept < len(b.lines) for b in shrinking):
            for b in shrinking:
                if room > 0 and b.kept < len(b.lines):
                    b.kept, room = b.kept + 1, room - 1
    return all(b.kept == len(b.lines) for b in blocks)


def advisor_text(state: AdvisorState | None, error: str | None = None, catching_up: bool = False,
                 width: int = 0, height: int = 0, notes: list[tuple[str, str]] | None = None,
                 taken: list[dict[str, Any]] | None = None) -> Text:
    """The advisor panel: regime, sharpness against its threshold, every recommendation in
    force, actions taken, alerts. Fitted to ``width`` x ``height`` (0: unbounded) by priority:
    ``notes`` (text, style: the app's last command to the run), the regime and each
    recommendation's action line always, then LR and sharpness, then the reasons and the last
    two actions the run took (``taken``: its ``action`` events), then the alerts (cut with …
    where there is no room), and a hint that ``a`` shows it all."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("Advisor", style="bold underline")
    if state is None:
        for note, style in notes or []:
            text.append("\n" + note, style=style)
        text.append("\n")
        text.append(error or "waiting for events", style="dim")
        return text
    if isinstance(state.step, int):
        text.append(f"  at step {state.step:,}", style="dim")
    if catching_up:
        text.append("  (catching up)", style="dim italic")
    blocks = _blocks(state, error, width or 10_000, notes or [], taken or [])
    room = height - 1 if height > 0 else float("inf")
    cut = not _fit(blocks, room)
    if cut:
        _fit(blocks, room - 1)
    for block in blocks:
        lines = block.lines[: block.kept]
        if block.kept < len(block.lines) and lines:
            last, style, plain = lines[-1]
            lines[-1] = (last[: max(width - 1, 1)].rstrip() + "…" if width else last + "…", style, plain)
        for line, style, plain in lines:
            text.append("\n" + line[:plain])
            text.append(line[plain:], style=style)
    if cut:
        text.append("\n")
        text.append(MORE_HINT, style="dim italic")
    return text


def advisor_detail(state: AdvisorState | None, error: str | None = None) -> Text:
    """Everything the advisor says, for the full screen: each recommendation in force with its
    reason and numbers, those the run followed and those withdrawn (the history), every alert,
    and the run's constant-LR phases."""
    text = Text()
    if state is None:
        text.append(error or "The advisor has no state yet: waiting for events.", style="dim")
        return text
    text.append(f"At step {state.step:,}" if isinstance(state.step, int) else "No step yet", style="bold")
    text.append(f": {state.regime}", style=REGIME_STYLES.get(state.regime, "bold"))
    text.append(f"\nLR {number(state.lr)}; {stability_words(state, number)}")
    if state.diverged_at_step is not None:
        text.append(f"\nDIVERGED at step {state.diverged_at_step:,}: {state.divergence_reason or ''}", style="bold red")
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        ("Recommendations in force", [(action_line(r) + (f"\n  {r.reason}" if r.reason else ""), "cyan")
                                      for r in state.recommendations]),
        ("Done", [(done_line(d) + (f"\n  {d.how}" if d.how else ""), "green") for d in state.done]),
        ("Withdrawn", [(action_line(w.recommendation) + (f", withdrawn @ {w.withdrawn_at_step:,}"
                                                         if isinstance(w.withdrawn_at_step, int) else ", withdrawn")
                        + (f"\n  why: {w.why}" if w.why else ""), "dim") for w in state.withdrawn]),
        ("Alerts", [(f"{a.severity}: {a.message}" + (f" @ {a.step:,}" if isinstance(a.step, int) else ""),
                     "bold red" if a.severity == "error" else "yellow" if a.severity == "warning" else "")
                    for a in state.alerts]),
        ("Phases at one LR", [(f"steps {s.start_step:,}-{s.end_step:,} at lr {number(s.lr)}: {s.regime}"
                               + (f", loss level {number(s.loss_level)}" if s.loss_level is not None else ""), "")
                              for s in state.segments]),
    ]
    for title, items in sections:
        text.append(f"\n\n{title}", style="bold underline")
        if not items:
            text.append("\nnone", style="dim")
        for item, style in items:
            text.append("\n" + item, style=style)
    if error:
        text.append(f"\n\n{error}", style="dim")
    return text


__all__ = ["EDGE_STYLES", "MORE_HINT", "REGIME_STYLES", "action_line", "actions_label",
           "advisor_detail", "advisor_text", "done_line", "number", "taken_line"]
