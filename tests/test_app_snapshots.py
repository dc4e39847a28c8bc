"""Snapshot tests of the main screen at 80x24 and 160x48 (fixed recorded runs, no clocks on screen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_support import wait_for, write_two_run_sweep
from lrtui.app import LrtuiApp

#: Fixed runs written once per session under this directory name (the name is on screen).
FROZEN = lambda: 1_795_840_100.0  # noqa: E731


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_run_sweep(tmp_path_factory.mktemp("snap") / "sweep", 600, diverge_at=420)


def _app(path: Path) -> LrtuiApp:
    # no local sampling (its numbers change); the probe's logged samples are on screen
    return LrtuiApp(path, "replay", clock=FROZEN, autoplay=False, start_at_end=True, system_interval=0)


async def _settled(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.position is not None and app.view.state is not None
                   and app.view.state.step == int(app.position), what="the replay to settle")
    app.redraw()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_main_screen(snap_compare, sweep: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(sweep / "lr-0.05"), terminal_size=size, run_before=_settled)


def test_diverged_run_in_a_sweep_at_160x48(snap_compare, sweep: Path) -> None:
    async def to_second_run(pilot) -> None:
        await _settled(pilot)
        await pilot.press("right_square_bracket", "l")
        await _settled(pilot)

    assert snap_compare(_app(sweep), terminal_size=(160, 48), run_before=to_second_run)
