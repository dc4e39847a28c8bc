"""Every key of the app, on every screen it has, in the real app headless: nothing raises.

Also the check of the ``textual`` floor in pyproject.toml: run this file with the oldest
textual the package allows (see docs/packaging.md), e.g. ``d`` needs ``App.theme`` (0.86).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app_support import headless, screen_text, wait_for, write_two_run_sweep
from lrtui.app import LrtuiApp
from lrtui.app.widgets import AdvisorScreen, HelpScreen, RunsScreen

FROZEN = lambda: 1_795_840_100.0  # noqa: E731
#: Keys of the main screen (replay keys do nothing harmful while watching).
MAIN_KEYS = ["l", "s", "s", "o", "right_square_bracket", "left_square_bracket", "space", "plus", "minus",
             "equals_sign", "home", "end", "left", "right", "pageup", "pagedown", "g", "G", "l", "o"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_run_sweep(tmp_path_factory.mktemp("keys") / "sweep", 300, diverge_at=200)


@pytest.mark.parametrize("mode", ["replay", "watch"])
@headless
async def test_every_key_on_every_screen(sweep: Path, mode: str) -> None:
    app = LrtuiApp(sweep, mode, clock=FROZEN, autoplay=False, system_interval=0, refresh=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: all(v.state is not None for v in app.views), what="both runs advised")
        for key in MAIN_KEYS:
            await pilot.press(key)
        theme = app.theme
        await pilot.press("d")
        assert app.theme != theme
        await pilot.press("d")
        assert app.theme == theme
        await pilot.press("a")
        assert isinstance(app.screen, AdvisorScreen)
        assert "Recommendations in force" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("down", "enter")
        assert not isinstance(app.screen, RunsScreen)
        assert app.view is not None and app.view.name == "lr-0.2"
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
