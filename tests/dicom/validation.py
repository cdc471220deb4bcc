"""dciodvfy (Debian's dicom3tools), which checks a DICOM object against the standard's IODs, for the tests."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def dciodvfy_messages(data: bytes, tmp_path: Path) -> list[str]:
    """Every line dciodvfy prints about the DICOM file `data`: errors, warnings and the IOD it checked against.
    Skips the test where dciodvfy is not installed."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (Debian's dicom3tools: apt-get install dicom3tools)")
    # A file of its own each call: a test may check several objects in one tmp_path.
    with tempfile.NamedTemporaryFile(dir=tmp_path, suffix=".dcm", delete=False) as file:
        file.write(data)
    completed = subprocess.run(["dciodvfy", file.name], capture_output=True, text=True, timeout=300)
    return [line.strip() for line in (completed.stdout + completed.stderr).splitlines() if line.strip()]


def errors_among(messages: list[str]) -> list[str]:
    return [line for line in messages if "Error" in line]


def dciodvfy_errors(data: bytes, tmp_path: Path) -> list[str]:
    """The lines in which dciodvfy reports an error in the DICOM file `data` (warnings left out)."""
    return errors_among(dciodvfy_messages(data, tmp_path))
