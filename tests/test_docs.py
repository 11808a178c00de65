"""The documentation: a short README, a site that builds with no broken link or reference, and words for users."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# phrases that only make sense inside the project's own workshop, never in what users read
INTERNAL = re.compile(r"issue #\d|seed material|\.\./shared|/work/|this shared machine|project's machines", re.I)


def test_the_readme_is_short_and_links_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 10_000
    for link in re.findall(r"\]\(((?:docs/|ARCHITECTURE)[^)#]*)", text):
        assert (ROOT / link).is_file(), link


def test_what_users_read_speaks_to_users():
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("src/resnets/**/*.py"),
             *ROOT.glob("src/resnets/recipes/*.yaml")]
    found = [f"{f.relative_to(ROOT)}: {m.group()}" for f in files if "results" not in f.parts
             for m in INTERNAL.finditer(f.read_text())]
    assert found == []


@pytest.mark.slow
def test_the_site_builds_strictly_with_the_generated_tables(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = (site / "models" / "index.html").read_text()
    assert "resnet50" in models and "25.56 M" in models and "4.089 G" in models  # generated from the registry
    exercises = (site / "learn" / "exercises" / "index.html").read_text()
    assert "batch_norm_train" in exercises and exercises.count("TODO") >= 9  # the starters, included
    assert "create_model" in (site / "api" / "index.html").read_text()
