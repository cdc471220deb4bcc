"""Shared fixtures: the real data in ../shared/data, the embedded model, a real server over HTTP."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.predictor import Predictor
from lesionseg.training.data import PairRecord, discover_pairs, split_pairs

REPOSITORY = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LESIONSEG_DATA_ROOT", REPOSITORY.parent / "shared" / "data"))


def require_data() -> Path:
    if not (DATA_ROOT / "isic2018" / "images").is_dir():
        pytest.skip(f"the shared dermoscopy data is not at {DATA_ROOT} (CC BY-NC, never copied into the repository)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def data_root() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def isic_validation_pairs(data_root: Path) -> list[PairRecord]:
    """The ISIC pairs the shipped model never trained on (the training split's defaults)."""
    _, validation = split_pairs(discover_pairs(data_root / "isic2018"), validation_fraction=0.1, split_seed=0)
    return validation


@pytest.fixture(scope="session")
def real_image_path(isic_validation_pairs: list[PairRecord]) -> Path:
    return isic_validation_pairs[0].image_path


@pytest.fixture(scope="session")
def original_size_image_path(data_root: Path) -> Path:
    """A full-resolution, non-square ISIC photo."""
    return sorted((data_root / "unlabeled" / "isic-original-size").glob("*.jpg"))[0]


@pytest.fixture(scope="session")
def large_jpeg_path(original_size_image_path: Path, tmp_path_factory) -> Path:
    """A real photo scaled to 1024×768, the size the latency numbers are quoted for."""
    image = cv2.imread(str(original_size_image_path))
    path = tmp_path_factory.mktemp("large") / "lesion_1024x768.jpg"
    cv2.imwrite(str(path), cv2.resize(image, (1024, 768), interpolation=cv2.INTER_CUBIC))
    return path


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(DEFAULT_WEIGHTS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def server_url() -> str:
    """`lesionseg serve` in its own process, on the embedded model, as a user would start it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionseg.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited at start-up:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the server did not answer /health within 120 s")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def client(server_url: str):
    with httpx.Client(base_url=server_url, timeout=120) as session:
        yield session


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "the response is not a readable PNG"
    return image
