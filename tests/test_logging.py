"""The probe's and the writer's reports go through logging: one line on stderr by default,
silenced or redirected the usual way (a real process, so no test harness handler is involved)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

#: In one process (one torch import), three times: a writer that cannot create its run directory
#: (a file is in the way) and a probe measurement that fails, each reported once; first with no
#: logging configured, then with the "lrtui" logger silenced, then with logging sent to a file.
SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from lrtui.runlog import RunWriter
    from probes.faults import Faults
    where = Path(sys.argv[1])
    (where / "a-file").write_text("in the way")

    def faults(name):
        writer = RunWriter(where / "a-file" / name, {"name": name})
        writer.write("step", 0, loss=1.0)
        writer.close()
        f = Faults()
        f.fail("sharpness", RuntimeError("no double backward"))
        f.fail("sharpness", RuntimeError("said once only"))

    faults("default")
    print("== silenced", file=sys.stderr, flush=True)
    logging.getLogger("lrtui").setLevel(logging.ERROR)
    faults("silenced")
    logging.getLogger("lrtui").setLevel(logging.NOTSET)
    print("== redirected", file=sys.stderr, flush=True)
    logging.basicConfig(filename=str(where / "app.log"), format="%(name)s %(levelname)s %(message)s")
    faults("redirected")
    print("training went on")
""")


def test_reports_go_through_the_lrtui_logger(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.returncode == 0 and done.stdout.strip() == "training went on", done.stderr
    default, rest = done.stderr.split("== silenced\n")
    silenced, redirected = rest.split("== redirected\n")
    lines = default.splitlines()
    assert len(lines) == 2, done.stderr  # one line per fault, each said once
    assert lines[0].startswith("lrtui: cannot create run directory") and "training continues" in lines[0]
    assert lines[1] == "lrtui probe: sharpness disabled (RuntimeError: no double backward); training continues"
    assert silenced == "" and redirected == ""
    logged = (tmp_path / "app.log").read_text().splitlines()
    assert [line.split()[:2] for line in logged] == [["lrtui.runlog", "WARNING"], ["lrtui.probe", "WARNING"]]
