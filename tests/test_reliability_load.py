"""Load: 50k events/s written while a follower process and the real app read; not one event lost.

LRTUI_LOAD_SECONDS sets the duration (default 5 in CI; the README figures are for 60:
``python benchmarks/load.py``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
SECONDS = float(os.environ.get("LRTUI_LOAD_SECONDS", "5"))
RATE = 50_000


def _load_module():
    spec = importlib.util.spec_from_file_location("lrtui_load_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writer_follower_and_app_under_load(tmp_path: Path) -> None:
    load = _load_module()
    result = load.run_load(SECONDS, RATE, with_app=True, workdir=tmp_path)
    load.print_table(result)
    writer, follower, app = result["writer"], result["follower"], result["app"]
    assert writer["error"] is None and writer["dropped"] == 0
    assert writer["written"] == int(RATE * SECONDS)
    # Not one event lost, none invented, in order: count and checksum agree.
    assert follower["ended"] and follower["followed"] == writer["written"]
    assert follower["crc"] == writer["crc"]
    assert follower["skipped"] == 0 and follower["resets"] == 0
    # Bounded memory: the follower hands events over in pieces and keeps none of them.
    assert follower["rss_peak"] - follower["rss_start"] < 200 << 20, follower
    # The app kept handling keys while the writer ran (latencies are in the printed table).
    assert app["latencies"] and max(app["latencies"]) < 30
    assert app["app_events"] > 0
