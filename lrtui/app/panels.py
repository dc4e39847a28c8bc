"""Text of the status line, advisor panel, system panel and replay bar, from plain values."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.text import Text

from lrtui.app.chart import format_number
from lrtui.system import GpuReading

#: Colour of each status word and regime: named ANSI colours, legible on dark and light.
STATUS_STYLES = {
    "live": "bold green",
    "running": "bold green",
    "replay": "bold cyan",
    "finished": "bold blue",
    "failed": "bold red",
    "crashed": "bold red",
    "stale": "bold yellow",
    "waiting": "yellow",
}
REGIME_STYLES = {
    "warmup": "dim",
    "converging": "green",
    "equilibrium": "yellow",
    "chance": "magenta",
    "diverged": "bold red",
}
EDGE_WORDS = {"below": "below the edge", "at_edge": "at the edge of stability", "above": "above the edge"}
EDGE_STYLES = {"below": "green", "at_edge": "yellow", "above": "bold red"}


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``4.2s``; ``-`` when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def size(n: float | None) -> str:
    """Bytes as GiB/MiB with one decimal."""
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    return f"{n / (1 << 20):.0f}M"


def status_line(name: str, status: str, step: int | None, steps_per_s: float | None,
                elapsed: float | None, since_last: float | None, extra: str = "") -> Text:
    """Run name, status word, step, steps/s, elapsed, seconds since the last event."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {name} ", style="bold reverse")
    text.append(" ")
    text.append(status, style=STATUS_STYLES.get(status.split()[0], "bold"))
    text.append(f"  step {step:,}" if step is not None else "  step -")
    if steps_per_s is not None and np.isfinite(steps_per_s):
        text.append(f"  {steps_per_s:,.1f} steps/s" if steps_per_s < 100 else f"  {steps_per_s:,.0f} steps/s")
    text.append(f"  elapsed {duration(elapsed)}")
    if since_last is not None:
        style = "yellow" if since_last > 10 else ""
        text.append(f"  last event {duration(since_last)} ago", style=style)
    if extra:
        text.append(f"  {extra}", style="dim")
    return text


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_num(v) for v in value)
    try:
        return format_number(float(value))
    except (TypeError, ValueError):
        return str(value)


def advisor_text(state: Any, error: str | None = None, catching_up: bool = False) -> Text:
    """The advisor's state as panel text: regime, sharpness against its threshold, alerts, advice."""
    text = Text()
    text.append("Advisor", style="bold underline")
    if state is None:
        text.append("\n")
        text.append(error or "waiting for events", style="dim")
        return text
    step = _field(state, "step")
    text.append(f"  at step {step:,}" if isinstance(step, int) else "", style="dim")
    if catching_up:
        text.append("  (catching up)", style="dim italic")
    regime = _field(state, "regime") or "-"
    text.append("\nregime   ")
    text.append(str(regime), style=REGIME_STYLES.get(str(regime), "bold"))
    text.append(f"\nLR       {_num(_field(state, 'lr'))}")
    sharp = _field(state, "sharpness")
    thresh = _field(state, "sharpness_threshold")
    method = _field(state, "sharpness_method")
    text.append(f"\nsharp.   {_num(sharp)} / {_num(thresh)}")
    if method:
        text.append(f" ({method})", style="dim")
    ratio = _field(state, "stability_ratio")
    edge = _field(state, "edge")
    if ratio is not None or edge:
        text.append(f"\nratio    {ratio:.2f} " if isinstance(ratio, (int, float)) else "\nratio    - ")
        if edge:
            text.append(EDGE_WORDS.get(str(edge), str(edge)), style=EDGE_STYLES.get(str(edge), ""))
    text.append(f"\nmax stable LR {_num(_field(state, 'max_stable_lr'))}")
    diverged_at = _field(state, "diverged_at_step")
    if diverged_at is not None:
        text.append(f"\nDIVERGED at step {diverged_at:,}", style="bold red")
    recommendations = list(_field(state, "recommendations") or [])
    for rec in recommendations[-2:]:
        action = str(_field(rec, "action") or "")
        at = _field(rec, "step")
        text.append(f"\n→ {action.replace('_', ' ')}", style="bold cyan")
        numbers = _field(rec, "numbers") or {}
        if isinstance(numbers, dict) and numbers.get("new_lr") is not None:
            text.append(f" to {_num(numbers['new_lr'])}", style="bold cyan")
        if isinstance(at, int):
            text.append(f" @ {at:,}", style="dim")
        reason = _field(rec, "reason")
        if reason:
            text.append(f"\n  {reason}", style="dim")
    # Info alerts repeat what the lines above say; warnings and errors are shown, newest last.
    alerts = [a for a in list(_field(state, "alerts") or []) if _field(a, "severity") != "info"]
    for alert in alerts[-3:]:
        severity = str(_field(alert, "severity") or "")
        style = "bold red" if severity == "error" else "yellow"
        at = _field(alert, "step")
        where = f" @ {at:,}" if isinstance(at, int) else ""
        text.append(f"\n! {_field(alert, 'message')}{where}", style=style)
    if error:
        text.append(f"\n{error}", style="dim")
    return text


def gpu_line(g: GpuReading) -> str:
    """One GPU in one line: index, name, utilization, memory, temperature, power."""
    parts = [f"GPU{g.index}"]
    if g.name:
        parts.append(g.name.replace("NVIDIA ", "")[:16])
    parts.append(f"{g.util:.0f}%" if g.util is not None else "-%")
    parts.append(f"{size(g.mem_used)}/{size(g.mem_total)}")
    if g.temp is not None:
        parts.append(f"{g.temp:.0f}°C")
    if g.power is not None:
        parts.append(f"{g.power:.0f}W")
    return " ".join(parts)


def system_text(gpus: list[GpuReading] | None, host: dict[str, Any] | None, nvml_error: str | None,
                job: list[dict[str, Any]], job_step: int | None) -> Text:
    """Local GPUs and host, then what the probe logged from inside the job."""
    text = Text()
    text.append("System", style="bold underline")
    if gpus is None:
        text.append(f"\n{nvml_error or 'sampling…'}", style="dim")
    elif gpus:
        for g in gpus:
            text.append("\n" + gpu_line(g))
    else:
        text.append(f"\nno local GPU: {nvml_error or 'none found'}", style="dim")
    if host:
        cpu = host.get("cpu_percent")
        text.append(f"\nCPU {cpu:.0f}%" if cpu is not None else "\nCPU -")
        text.append(f"  RAM {size(host.get('mem_used'))}/{size(host.get('mem_total'))}")
    if job:
        at = f" @ step {job_step:,}" if job_step is not None else ""
        text.append(f"\nin the job{at}", style="bold")
        for event in job:
            reading = GpuReading.from_event(event)
            if reading is not None:
                text.append("\n" + gpu_line(reading))
        first = job[0]
        cpu, rss = first.get("cpu_percent"), first.get("rss")
        if cpu is not None or rss is not None:
            cpu_text = f"{cpu:.0f}%" if isinstance(cpu, (int, float)) and np.isfinite(cpu) else "-"
            text.append(f"\nprocess CPU {cpu_text}  RSS {size(rss)}")
    return text


def _step_text(step: float) -> str:
    return f"{int(step):,}" if np.isfinite(step) else "?"


def replay_bar(playing: bool, speed: float, position: float, first: float, last: float, width: int) -> Text:
    """Play state, speed, position and a progress bar."""
    text = Text(no_wrap=True, overflow="crop")
    text.append(" ▶ playing" if playing else " ❚❚ paused", style="bold green" if playing else "bold yellow")
    text.append(f"  ×{speed:g}  step {_step_text(position)} / {_step_text(last)}  ")
    room = max(width - text.cell_len - 2, 4)
    frac = (position - first) / (last - first) if np.isfinite(last - first) and last > first else 0.0
    frac = frac if np.isfinite(frac) else 0.0
    filled = int(round(min(max(frac, 0.0), 1.0) * room))
    text.append("█" * filled, style="cyan")
    text.append("─" * (room - filled), style="dim")
    return text


__all__ = [
    "advisor_text",
    "duration",
    "gpu_line",
    "replay_bar",
    "size",
    "status_line",
    "system_text",
]
