"""The text panels of the screen from plain values: fitted to the room they get, whatever the run holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrtui.advisor import Advisor, AdvisorState, Alert, Done, Recommendation, Withdrawn
from lrtui.app.advisor_panel import MORE_HINT, advisor_detail, advisor_text
from lrtui.app.panels import status_line, system_text
from lrtui.runlog import load_run

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"

REASON = ("loss is stationary at 0.325 over steps 960-1832 (change -43.7%..-2.6%, 90% CI, too noisy to "
          "bound, but no new low 10% below the best before it): further steps at lr 0.00811 no longer "
          "lower it; drop the LR to 0.000811 (x0.1) to fine-tune")


def _state(n_recs: int = 2) -> AdvisorState:
    recs = [Recommendation("drop_lr", 1832, REASON, {"new_lr": 0.000811}),
            Recommendation("start_averaging", 1832, "loss reached its equilibrium level 0.325: " + REASON),
            Recommendation("rollback", 1900, "divergence began at step 1900: roll back to step 1800")][:n_recs]
    return AdvisorState(step=9992, regime="equilibrium", lr=0.00811, sharpness=204.0, sharpness_method="hessian",
                        sharpness_threshold=247.0, stability_ratio=0.83, max_stable_lr=0.0098, edge="below",
                        recommendations=recs,
                        alerts=[Alert("warning", 110, "sharpness 23.07 (hessian) is 1.21x the stability threshold")])


@pytest.mark.parametrize("height", [8, 12, 16, 40])
def test_every_recommendation_in_force_shows_whatever_the_room(height: int) -> None:
    """At 80x24 the panel is 28 columns by about 12 rows: each recommendation's action line is
    always there, nothing is wider than the panel, and what was left out is one key away."""
    for n in (1, 2, 3):
        lines = advisor_text(_state(n), width=28, height=height).plain.splitlines()
        assert len(lines) <= height and all(len(line) <= 28 for line in lines), lines
        actions = [line for line in lines if line.startswith("→ ")]
        assert [a.split(" @")[0] for a in actions] == ["→ drop lr to 8.1e-4", "→ start averaging",
                                                        "→ rollback"][:n], lines
        assert lines[1] == "regime  equilibrium"
        everything = advisor_text(_state(n), width=28).plain.splitlines()
        assert (lines[-1] == MORE_HINT) == (len(everything) > height)
    # unbounded: every reason whole, no hint
    whole = advisor_text(_state(2)).plain
    assert REASON in whole and MORE_HINT not in whole


def test_reasons_share_the_room_before_alerts() -> None:
    lines = advisor_text(_state(2), width=28, height=14).plain.splitlines()
    # both reasons get their first lines; the alert waits for room
    assert any(line.startswith("  loss is stationary") for line in lines)
    assert any(line.startswith("  loss reached its") for line in lines)
    assert not any(line.startswith("! sharpness") for line in lines)
    assert "! sharpness 23.07" in advisor_text(_state(2), width=28, height=60).plain


def test_full_advice_has_everything() -> None:
    text = advisor_detail(_state(3)).plain
    assert REASON in text and "roll back to step 1800" in text and "warning: sharpness 23.07" in text


def test_status_line_keeps_what_matters_at_80_columns() -> None:
    line = status_line("lr-8.11e-03", "replay · finished", 9992, 957.0, 8.7, None, "", "run 12/12", width=80).plain
    assert line.rstrip().endswith("run 12/12") and len(line) <= 80
    narrow = status_line("a-very-long-run-name-of-a-sweep", "live", 123456, 1234.5, 3600.0, 0.4,
                         "3 bad lines skipped", "run 3/40", width=80).plain
    assert len(narrow) <= 80
    for part in ("a-very-long-run-name", "live", "step 123,456", "last event", "run 3/40"):
        assert part in narrow
    assert "steps/s" not in narrow  # what matters least went first


def test_system_panel_takes_any_value_a_run_logged() -> None:
    """A system event is the run's, and may hold text, lists, huge integers or NaN where
    numbers belong: each is shown as unknown, never a crash."""
    for bad in ("big", [1, 2], {"a": 1}, 10**400, float("nan"), float("inf"), True, None):
        job = [{"step": 5, "cpu_percent": bad, "rss": bad, "gpu_index": 0, "gpu_name": bad, "gpu_util": bad,
                "gpu_mem_used": bad, "gpu_mem_total": bad, "gpu_temp": bad, "gpu_power": bad}]
        for compact in (False, True):
            text = system_text(None, {"cpu_percent": 3.0, "mem_used": 1 << 30, "mem_total": 8 << 30}, "NVML not available: x",
                               job, 5, compact).plain
            assert "GPU0" in text and "-%" in text


def test_done_ones_show_as_done_and_withdrawn_ones_only_on_demand() -> None:
    state = _state(1)
    state.done = [Done(Recommendation("start_averaging", 1832, "averaging"), 2000, "averaging began (action event)")]
    state.withdrawn = [Withdrawn(Recommendation("rollback", 900, "spike"), 1100, "the loss recovered: a catapult")]
    panel = advisor_text(state, width=28, height=20).plain
    assert "→ drop lr to 8.1e-4 @ 1,832" in panel and "✓ averaging started @ 2,000" in panel
    assert "rollback" not in panel  # the history is one key away, not in the panel
    detail = advisor_detail(state).plain
    assert "✓ averaging started @ 2,000" in detail and "averaging began" in detail
    assert "→ rollback @ 900, withdrawn @ 1,100" in detail and "why: the loss recovered" in detail
    # a state with neither: the sections say none
    assert "Done\nnone" in advisor_detail(_state(1)).plain and "Withdrawn\nnone" in advisor_detail(_state(1)).plain


def test_the_panels_show_a_real_advisor_states_done_and_withdrawn() -> None:
    """The sample sweep's lr 0.0285: the advisor recommended drop_lr and start_averaging during its
    pre-training, the run dropped its LR at step 10,000 itself (drop_lr done) without averaging
    (start_averaging withdrawn by the new phase)."""
    state = Advisor.from_run(load_run(SAMPLES / "sweep" / "lr-2.85e-02")).state()
    assert [d.recommendation.action for d in state.done] == ["drop_lr"]
    assert [w.recommendation.action for w in state.withdrawn] == ["start_averaging"]
    done, withdrawn = state.done[0], state.withdrawn[0]
    panel = advisor_text(state, width=40, height=24).plain
    assert f"✓ LR dropped @ {done.done_at_step:,}" in panel and "start averaging" not in panel
    detail = advisor_detail(state).plain
    assert f"✓ LR dropped @ {done.done_at_step:,}" in detail and done.how in detail
    assert (f"→ start averaging @ {withdrawn.recommendation.step:,}, withdrawn @ {withdrawn.withdrawn_at_step:,}"
            in detail and f"why: {withdrawn.why}" in detail)
    assert "Recommendations in force\nnone" in detail
