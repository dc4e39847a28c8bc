"""Text of the status line, system panel and replay bar, from plain values."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.text import Text

from lrtui.runlog import finite_float
from lrtui.system import GpuReading

#: Colour of each status word and regime: named ANSI colours, legible on dark and light.
STATUS_STYLES = {
    "live": "bold green",
    "running": "bold green",
    "replay": "bold cyan",
    "finished": "bold blue",
    "failed": "bold red",
    "crashed": "bold red",
    "terminated": "bold magenta",
    "stale": "bold yellow",
    "waiting": "yellow",
}
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
    if n is None or not np.isfinite(n):
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    return f"{n / (1 << 20):.0f}M"


def status_line(name: str, status: str, step: int | None, steps_per_s: float | None,
                elapsed: float | None, since_last: float | None, extra: str = "", run_of: str = "",
                width: int = 0) -> Text:
    """Run name, status word, step, steps/s, elapsed, seconds since the last event, which run of
    a sweep, and a note. Fitted to ``width`` (0: unbounded): what matters least is left out
    first (steps/s, then elapsed), so the run, its state and its step always show."""
    parts: list[tuple[int, str, str]] = [  # (priority: lower stays longer, text, style)
        (0, f" {name} ", "bold reverse"),
        (0, f" {status}", STATUS_STYLES.get(status.split()[0], "bold") if status else "bold"),
        (0, f"  step {step:,}" if step is not None else "  step -", ""),
    ]
    if steps_per_s is not None and np.isfinite(steps_per_s):
        rate = f"{steps_per_s:,.1f}" if steps_per_s < 100 else f"{steps_per_s:,.0f}"
        parts.append((4, f"  {rate} steps/s", ""))
    parts.append((3, f"  elapsed {duration(elapsed)}", ""))
    if since_last is not None:
        parts.append((1, f"  last event {duration(since_last)} ago", "yellow" if since_last > 10 else ""))
    if run_of:
        parts.append((1, f"  {run_of}", ""))
    if extra:
        parts.append((2, f"  {extra}", "dim"))
    if width > 0:
        def too_long() -> int:
            return sum(len(t) for _, t, _ in parts) - width

        while too_long() > 0 and max(p for p, _, _ in parts) > 1:
            parts.pop(max(range(len(parts)), key=lambda i: (parts[i][0], i)))
        if too_long() > 0:  # a long run name gives way before the sweep position and liveness
            keep = max(len(name) - too_long() - 1, 12)
            if keep < len(name):
                parts[0] = (0, f" {name[:keep]}… ", parts[0][2])
        while too_long() > 0 and max(p for p, _, _ in parts) > 0:
            parts.pop(max(range(len(parts)), key=lambda i: (parts[i][0], i)))
    text = Text(no_wrap=True, overflow="ellipsis")
    for _, part, style in parts:
        text.append(part, style=style)
    return text


def gpu_line(g: GpuReading) -> str:
    """One GPU in one line: index, name, utilization, memory, temperature, power."""
    parts = [f"GPU{g.index}"]
    if g.name:
        parts.append(g.name.replace("NVIDIA ", "")[:16])
    util, temp, power = (finite_float(v) for v in (g.util, g.temp, g.power))
    parts.append(f"{util:.0f}%" if util is not None else "-%")
    parts.append(f"{size(finite_float(g.mem_used))}/{size(finite_float(g.mem_total))}")
    if temp is not None:
        parts.append(f"{temp:.0f}°C")
    if power is not None:
        parts.append(f"{power:.0f}W")
    return " ".join(parts)


def system_text(gpus: list[GpuReading] | None, host: dict[str, Any] | None, nvml_error: str | None,
                job: list[dict[str, Any]], job_step: int | None, compact: bool = False) -> Text:
    """Local GPUs and host, then what the probe logged from inside the job. ``compact`` (a short
    terminal): the host on the title line, the job on one line, NVML's reason without detail."""
    text = Text()
    text.append("System", style="bold underline")
    host_line = ""
    if host:
        cpu = finite_float(host.get("cpu_percent"))
        used, total = finite_float(host.get("mem_used")), finite_float(host.get("mem_total"))
        host_line = f"CPU {cpu:.0f}%" if cpu is not None else "CPU -"
        if compact:
            host_line += f"  RAM {used / total:.0%}" if used is not None and total else "  RAM -"
            text.append("  " + host_line)
        else:
            host_line += f"  RAM {size(used)}/{size(total)}"
    reason = nvml_error or ""
    if compact and ": " in reason:
        reason = reason.split(": ")[0]  # "NVML not available", without the library's words
    if gpus is None:
        text.append(f"\n{reason or 'sampling…'}", style="dim")
    elif gpus:
        for g in gpus:
            text.append("\n" + gpu_line(g))
    else:
        text.append(f"\n{'no GPU' if compact else 'no local GPU'}: {reason or 'none found'}", style="dim")
    if host_line and not compact:
        text.append("\n" + host_line)
    if job:
        first = job[0]  # what a run logged may hold anything: only finite numbers are shown
        cpu, rss = finite_float(first.get("cpu_percent")), finite_float(first.get("rss"))
        process = ""
        if cpu is not None or rss is not None:
            process = f"CPU {cpu:.0f}%  RSS {size(rss)}" if cpu is not None else f"CPU -  RSS {size(rss)}"
        at = f" @ step {job_step:,}" if job_step is not None else ""
        if compact:  # the job's step is about the run's, on the status line
            text.append("\njob", style="bold")
            text.append(f"  {process}" if process else "")
        else:
            text.append(f"\nin the job{at}", style="bold")
        for event in job:
            reading = GpuReading.from_event(event)
            if reading is not None:
                text.append("\n" + gpu_line(reading))
        if process and not compact:
            text.append(f"\nprocess {process}")
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
    "STATUS_STYLES",
    "duration",
    "gpu_line",
    "replay_bar",
    "size",
    "status_line",
    "system_text",
]
