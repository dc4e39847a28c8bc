"""The probe's and the writer's reports go through logging: one line on stderr by default,
silenced or redirected the usual way (real processes, so no test harness handler is involved)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: A writer that cannot create its run directory (a file is in the way) and a probe
#: measurement that fails: each is reported once.
SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    mode, where = sys.argv[1], Path(sys.argv[2])
    if mode == "silenced":
        logging.getLogger("lrtui").setLevel(logging.ERROR)
    elif mode == "redirected":
        logging.basicConfig(filename=str(where / "app.log"), format="%(name)s %(levelname)s %(message)s")
    (where / "a-file").write_text("in the way")
    from lrtui.runlog import RunWriter
    from probes.faults import Faults
    writer = RunWriter(where / "a-file" / "run", {"name": "x"})
    writer.write("step", 0, loss=1.0)
    writer.close()
    faults = Faults()
    faults.fail("sharpness", RuntimeError("no double backward"))
    faults.fail("sharpness", RuntimeError("said once only"))
    print("training went on")
""")


def _run(mode: str, where: Path) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, str(where)], capture_output=True, text=True,
                          timeout=120, cwd=root)


@pytest.mark.parametrize("mode", ["default", "silenced", "redirected"])
def test_reports_go_through_the_lrtui_logger(tmp_path: Path, mode: str) -> None:
    done = _run(mode, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "training went on", done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    if mode == "default":
        assert len(lines) == 2, done.stderr
        assert lines[0].startswith("lrtui: cannot create run directory") and "training continues" in lines[0]
        assert lines[1] == "lrtui probe: sharpness disabled (RuntimeError: no double backward); training continues"
    else:
        assert lines == []
    if mode == "redirected":
        logged = (tmp_path / "app.log").read_text().splitlines()
        assert [ln.split()[:2] for ln in logged] == [["lrtui.runlog", "WARNING"], ["lrtui.probe", "WARNING"]]
