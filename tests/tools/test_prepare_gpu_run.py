"""`tools/prepare_gpu_run.sh` as a session runs it before a GPU call: the wheels a bare CUDA image lacks, for its
Python, at our pins; a photo; and a training pack, all within the device's 64 MiB with the checkout."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

# Slow tier (`make test-fast` leaves it out): it downloads 7 MB of wheels and packs thousands of real pairs.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).parents[2]
LIMIT_BYTES = 64 * 1024 * 1024


def pinned(name: str) -> str:
    line = next(line for line in (REPOSITORY / "requirements.txt").read_text().splitlines() if line.startswith(name))
    return line.split()[0].split("==")[1]


def test_the_carried_folder_fits_the_limit_with_the_checkout(data_root, tmp_path):
    folder = tmp_path / "carried"
    environment = {**os.environ, "PYTHON": sys.executable, "DATA_ROOT": str(data_root)}
    finished = subprocess.run(
        [str(REPOSITORY / "tools" / "prepare_gpu_run.sh"), str(folder)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    wheels = {path.name for path in (folder / "wheels").iterdir()}
    assert f"timm-{pinned('timm==')}-py3-none-any.whl" in wheels
    assert any(name.startswith(f"pydantic_core-{pinned('pydantic-core==')}-cp312-cp312-manylinux") for name in wheels)
    assert any(name.startswith("uvicorn-") for name in wheels)  # HTTP is measured on the GPU too
    assert cv2.imread(str(folder / "photo.jpg")).shape == (768, 1024, 3)
    tracked = subprocess.run(["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    checkout = sum(
        (REPOSITORY / name).stat().st_size
        for name in tracked.stdout.splitlines()
        if not name.endswith(".onnx") and (REPOSITORY / name).is_file()
    )
    carried = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert checkout + carried <= LIMIT_BYTES
    assert (folder / "data.zip").stat().st_size > LIMIT_BYTES / 2  # the pack takes what is left
    assert "to carry:" in finished.stdout and "tools/gpu_run.sh" in finished.stdout
