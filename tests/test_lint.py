"""The code passes the linter (ruff: pyflakes, pycodestyle, bugbear) and the public API the type checker (mypy),
both set in pyproject.toml, so CI fails on a regression: an unused import, an undefined name, a loop variable
captured late, a line past 120 characters, an untyped function or a type error in the typed API."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """A tool installed beside the interpreter that runs the tests (a virtual environment's), else on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or \
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")


def test_ruff_finds_nothing():
    ruff = _tool("ruff")
    done = subprocess.run([ruff, "check", "--no-cache", "src", "bench", "tests", "docs", "hubconf.py"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_ruff_catches_what_it_is_set_to(tmp_path):
    """The settings are live: a file with an unused import and a late-bound loop variable fails."""
    ruff = _tool("ruff")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nfns = []\nfor i in range(3):\n    fns.append(lambda: i)\n")
    done = subprocess.run([ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "B023" in done.stdout


@pytest.mark.slow  # about 10 s
def test_mypy_finds_nothing_in_the_typed_api():
    done = subprocess.run([_tool("mypy"), "--no-incremental"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
