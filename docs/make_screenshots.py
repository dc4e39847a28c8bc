"""Save the README's screenshots: the real app replaying the committed sample runs, headless.

Run: ``python docs/make_screenshots.py`` (no torch needed, under a minute). Each screenshot is
the app as ``lrtui replay`` shows it at 160x48, at a chosen run, replay position and toggles; the
SVGs go to docs/.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from lrtui.app import LrtuiApp

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_runs"


@dataclass
class Shot:
    """One screenshot: what to replay, which run of a sweep, where, and the keys pressed."""

    file: str
    path: Path
    run: str | None = None  # a run of the sweep to select (None: the first)
    step: float | None = None  # the replay position (None: the end)
    keys: tuple[str, ...] = ()


SHOTS = [
    # The sweep's chaotic-equilibrium run at the end of its pre-training: the advisor's call.
    Shot("sweep-equilibrium.svg", SAMPLES / "sweep", run="lr-8.11e-03", step=9992, keys=("l",)),
    # Every run of the sweep on one loss chart, labelled by LR.
    Shot("sweep-overlay.svg", SAMPLES / "sweep", run="lr-8.11e-03", step=9992, keys=("o", "l")),
    # Momentum SGD on the CNN: sharpness climbs to 2(1+β)/η and stays there.
    Shot("momentum-cnn-edge.svg", SAMPLES / "momentum-cnn", keys=("l",)),
    # The diverging run: the first non-finite loss, flagged (linear scale: on a log scale the
    # loss before the blow-up is more than 12 decades below its peak, under the chart's floor).
    Shot("diverging.svg", SAMPLES / "diverging"),
]


async def _settled(app: LrtuiApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """Wait until every run is read and the advisor has caught up with the replay position."""
    for _ in range(1200):
        view = app.view
        state = view.state if view is not None else None
        if (view is not None and all(v.complete for v in app.views) and app.position is not None
                and state is not None and state.step is not None and state.step >= int(app.position) - 8):
            return
        await pilot.pause(0.05)
    raise RuntimeError("the replay did not settle in a minute")


async def take(shot: Shot) -> Path:
    app = LrtuiApp(shot.path, "replay", autoplay=False, start_at_end=True, system_interval=0)
    out = HERE / shot.file
    async with app.run_test(size=(160, 48)) as pilot:
        await _settled(app, pilot)
        if shot.run is not None:
            if shot.run not in [v.path.name for v in app.views]:
                raise SystemExit(f"no run {shot.run} in {shot.path}")
            while app.view.path.name != shot.run:
                await pilot.press("right_square_bracket")
        if shot.step is not None:
            app.set_position(shot.step)
        else:
            await pilot.press("end")
        await _settled(app, pilot)
        for key in shot.keys:
            await pilot.press(key)
        app.redraw()
        await pilot.pause(0.2)
        app.save_screenshot(out.name, str(out.parent))
    return out


def main() -> int:
    for shot in SHOTS:
        print(f"wrote {asyncio.run(take(shot))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
