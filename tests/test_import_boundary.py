"""lrtui never imports torch: every module imports with torch made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys

    class NoTorch:
        # A viewer on a laptop has no torch; make this interpreter behave like one.
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is not available here (import of {name!r})")
            return None

    sys.meta_path.insert(0, NoTorch())
    for name in list(sys.modules):
        if name == "torch" or name.startswith("torch."):
            del sys.modules[name]

    import lrtui
    failures, names = [], ["lrtui"]

    def on_error(name):
        failures.append(f"{name}: {sys.exc_info()[1]!r}")

    for info in pkgutil.walk_packages(lrtui.__path__, "lrtui.", onerror=on_error):
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except BaseException as exc:
            failures.append(f"{info.name}: {exc!r}")
    torch_loaded = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
    print("\\n".join(failures + [f"torch loaded: {torch_loaded}"] * bool(torch_loaded)))
    print("IMPORTED", len(names), " ".join(names))
""")


def test_every_lrtui_module_imports_without_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *failures, summary = proc.stdout.strip().splitlines()
    assert failures == [], "\n".join(failures)
    names = summary.split()[2:]
    assert {"lrtui.cli", "lrtui.runlog.reader", "lrtui.runlog.follower"} <= set(names)


def test_the_blocker_really_blocks_torch() -> None:
    """The finder above must make ``import torch`` fail, or the boundary test proves nothing."""
    probe = SCRIPT.split("import lrtui\n")[0] + textwrap.dedent("""
        try:
            import torch
        except ImportError as exc:
            print("blocked:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("blocked: torch is not available here"), proc.stdout + proc.stderr
