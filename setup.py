"""Build hook (the rest of the configuration is pyproject.toml): the wheel carries four runs of
the sample sweep, so ``lrtui demo --replay`` works from an installed package without the
repository. An editable install reads ``sample_runs/`` where it is."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: Runs of sample_runs/sweep shipped for the demo: one that converges, two in the chaotic
#: equilibrium (the best averaged model of the sweep among them) and one at chance: enough for
#: the sweep's verdict. About 1.7 MB installed, a fifth of that in the wheel.
DEMO_RUNS = ("lr-5.34e-03", "lr-8.11e-03", "lr-2.85e-02", "lr-1.00e-01")
RUN_FILES = ("meta.json", "events.jsonl")


class BuildWithDemoRuns(build_py):
    """build_py, then the demo runs copied into ``lrtui/demo_runs/sweep`` of the build."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = HERE / "sample_runs" / "sweep"
        target = Path(self.build_lib) / "lrtui" / "demo_runs" / "sweep"
        for name in DEMO_RUNS:
            for file in RUN_FILES:
                if not (source / name / file).is_file():
                    raise SystemExit(f"setup.py: {source / name / file} is missing (the demo runs of the wheel)")
                (target / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name / file, target / name / file)


setup(cmdclass={"build_py": BuildWithDemoRuns})
