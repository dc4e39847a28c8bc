"""The words for an advisor state, shared by everything that prints one: ``lrtui advise``'s
human output and the app's advisor panels. Plain strings (no Rich, no I/O)."""

from __future__ import annotations

from collections.abc import Callable

from lrtui.advisor.state import AdvisorState

#: Where the sharpness stands against the stability threshold (``AdvisorState.edge``).
EDGE_WORDS = {"below": "below the edge of stability", "at_edge": "at the edge of stability",
              "above": "above the edge of stability"}
#: The same, short enough for the app's side panel.
EDGE_SHORT = {"below": "below the edge", "at_edge": "at the edge", "above": "above the edge"}


def edge_words(edge: str | None, short: bool = False) -> str:
    """``at the edge of stability`` (or ``at the edge``) for an ``edge``; ``unknown`` without one."""
    return (EDGE_SHORT if short else EDGE_WORDS).get(edge or "", str(edge or "unknown"))


def _g4(value: float | None) -> str:
    return "?" if value is None else format(value, ".4g")


def stability_words(st: AdvisorState, num: Callable[[float | None], str] = _g4) -> str:
    """The sharpness against its threshold in one sentence, numbers written by ``num``:
    ``sharpness 97.4 (hessian, step 120) against the stability threshold 100: 0.97x, at the edge
    of stability; largest stable LR 0.0205``, or why there is no such comparison."""
    if st.sharpness is None:
        if st.sharpness_threshold is not None:
            return f"stability threshold {num(st.sharpness_threshold)} (no sharpness logged)"
        return f"no stability threshold known for {st.optimizer or 'this optimizer'}"
    step = f", step {st.sharpness_step:,}" if isinstance(st.sharpness_step, int) else ""
    where = f" ({st.sharpness_method}{step})" if st.sharpness_method else ""
    text = f"sharpness {num(st.sharpness)}{where} against the stability threshold {num(st.sharpness_threshold)}"
    if st.stability_ratio is not None:
        text += f": {st.stability_ratio:.2f}x, {edge_words(st.edge)}"
    if st.max_stable_lr is not None:
        text += f"; largest stable LR {num(st.max_stable_lr)}"
    return text


__all__ = ["EDGE_SHORT", "EDGE_WORDS", "edge_words", "stability_words"]
