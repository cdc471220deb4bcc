"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing page, an anchor that is
not there or an API reference that does not resolve fails the build, and so this test."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Slow tier (`make test-fast` leaves it out): it runs MkDocs in a process of its own.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_documentation_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed: `make test` installs it")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    pages = {path.relative_to(tmp_path / "site").as_posix() for path in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "trust/index.html", "reference/index.html", "review/index.html"} <= pages
    # The API reference is made from the docstrings, not left empty.
    assert "PredictionRequest" in (tmp_path / "site" / "reference" / "index.html").read_text()
    shutil.rmtree(tmp_path / "site")


def test_every_readme_section_of_before_lives_on_a_page():
    """The README was a 1,650-line notebook; its sections moved to the documentation, none was dropped."""
    headings = [
        "Two commands on a fresh machine", "Install it", "Use it from Python", "Command line", "The model",
        "How much to trust it: the uncertainty", "Another clinic, another camera", "Training and evaluating",
        "Performance", "Operating it", "Hostile input: what the tests send", "The review worklist: from flag to fix",
        "Box-prompted proposals: LiteMedSAM", "Beyond one machine", "On a GPU: `--device`", "Where things live",
    ]  # fmt: skip
    text = "\n".join(path.read_text() for path in (REPOSITORY / "docs").glob("*.md"))
    missing = [heading for heading in headings if f"# {heading}" not in text]
    assert not missing, missing
