"""Packaging checks: the core stays headless, the manifest is valid, CI runs the README's command."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BLOCKER = r"""
import sys
BLOCKED = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked GUI import: {name}")
        return None

sys.meta_path.insert(0, Blocker())
import braggsim, braggsim.simulate, braggsim.crystal, braggsim.detector, braggsim.nanobragg_flags
import braggsim.cli
for extra in ("braggsim.refine", "braggsim.io"):
    try:
        __import__(extra)
    except ModuleNotFoundError as exc:
        if exc.name != extra:
            raise
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("HEADLESS-OK")
"""


def test_core_imports_with_gui_packages_blocked():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEADLESS-OK" in result.stdout


def test_blocker_really_blocks():
    # the check above would pass vacuously if the blocker did nothing
    code = BLOCKER.split("import braggsim")[0] + "import qtpy\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "blocked GUI import: qtpy" in result.stderr


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-braggsim", "--imports"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_ci_runs_the_readme_test_commands():
    """The README's test commands are what CI runs: set up, the whole suite on the fast
    path, then the torch_path subset with the kernel switched off."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    fast = "bash scripts/setup.sh && .venv/bin/python -m pytest"
    torch_path = "BRAGGSIM_NATIVE=0 .venv/bin/python -m pytest -m torch_path"
    assert f"    {fast}\n" in readme and f"    {torch_path}\n" in readme
    assert ci_lines.index(fast) < ci_lines.index(torch_path)
