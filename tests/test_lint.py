"""The code passes the linter (ruff: pyflakes, pycodestyle, bugbear; settings in pyproject.toml), so CI fails on a
regression: an unused import, an undefined name, a loop variable captured late, a line past 120 characters."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    """The ruff installed beside the interpreter that runs the tests (a virtual environment's), else on PATH."""
    return shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff") or \
        pytest.skip("ruff is not installed (pip install -e '.[test]')")


def test_ruff_finds_nothing():
    ruff = _ruff()
    done = subprocess.run([ruff, "check", "--no-cache", "src", "bench", "tests", "docs", "hubconf.py"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_ruff_catches_what_it_is_set_to(tmp_path):
    """The settings are live: a file with an unused import and a late-bound loop variable fails."""
    ruff = _ruff()
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nfns = []\nfor i in range(3):\n    fns.append(lambda: i)\n")
    done = subprocess.run([ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "B023" in done.stdout
