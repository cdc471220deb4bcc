"""Shared fixtures: the real data in ../shared/data, the embedded model, a real server over HTTP."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import PairRecord, discover_pairs
from lesionseg.data.splits import Split
from lesionseg.model.sidecar import read_sidecar
from lesionseg.predictor import Predictor

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
    """The ISIC pairs the shipped model never trained on (its validation and test splits)."""
    return Split.of_model(read_sidecar(DEFAULT_WEIGHTS).training).select(
        discover_pairs(data_root / "isic2018"), "held-out"
    )


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


class RunningServer:
    """`lesionseg serve` in its own process, as a user would start it, with extra LESIONSEG_* settings
    and, where given, other environment variables, another `lesionseg` command and working folder, and
    more arguments to `serve` (`--workers 2`)."""

    def __init__(
        self,
        environment: dict[str, str] | None = None,
        command: list[str] | None = None,
        cwd: Path | None = None,
        arguments: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            **(environment or {}),
            **{f"LESIONSEG_{key.upper()}": value for key, value in settings.items()},
        }
        # A file, not a pipe: nobody reads a pipe while tests run, and a full one would block the server.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "lesionseg.cli"]), "serve", "--port", str(self.port), *arguments],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited at start-up:\n{self.read_log()}")
            try:
                # 401: keys are required; 421: the server answers only to other Host names.
                if httpx.get(f"{self.url}/ready", timeout=2).status_code in (200, 401, 421):
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.process.kill()
        pytest.fail("the server was not ready within 120 s")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> str:
        """Stops the server (SIGTERM, as an orchestrator would) and returns what it logged."""
        self.process.terminate()
        self.process.wait(timeout=60)
        output = self.read_log()
        self.log.close()
        return output


class RayServeApplication:
    """`serve run` on the shipped deploy/ray-serve.yaml, with the port changed and autoscaling pinned to
    `replicas`; `serve run` starts a local Ray cluster and Ctrl-C stops both."""

    def __init__(self, workspace: Path, replicas: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = (REPOSITORY / "deploy" / "ray-serve.yaml").read_text()
        config = re.sub(r"port: \d+", f"port: {self.port}", config)
        config = re.sub(r"(min_replicas|initial_replicas|max_replicas): \d+", rf"\1: {replicas}", config)
        config_path = workspace / "ray-serve.yaml"
        config_path.write_text(config)
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", str(config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workspace,
            env={
                **os.environ,
                # Ray folds alike log lines of different processes into one; the tests read which replica served.
                "RAY_DEDUP_LOGS": "0",
                # Ray Serve kills its HTTP proxy when it is not ready within 5 s, three times running: on a busy
                # 2-core machine it takes longer, and `serve run` then dies (seen here while a training ran).
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120",
                "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "120",
            },
        )
        # A hang guard, not a bound: two replicas importing torch on a busy 2-core machine took over 4 minutes.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve run exited at start-up:\n{self.read_log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"Ray Serve was not ready within 600 s:\n{self.read_log()[-4000:]}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def server_url() -> str:
    server = RunningServer()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def client(server_url: str):
    with httpx.Client(base_url=server_url, timeout=120) as session:
        yield session


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "the response is not a readable PNG"
    return image
