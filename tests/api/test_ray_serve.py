"""The app replicated by Ray Serve, from deploy/ray-serve.yaml on a local Ray cluster, over HTTP:
the same endpoints and contracts as the single-process `lesionseg serve`."""

import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import decode_png, free_port

REPOSITORY = Path(__file__).resolve().parents[2]
REPLICAS = 2


class RayServeApplication:
    """`serve run` on the shipped config, with the port changed and autoscaling pinned to two replicas."""

    def __init__(self, workspace: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = (REPOSITORY / "deploy" / "ray-serve.yaml").read_text()
        config = re.sub(r"port: \d+", f"port: {self.port}", config)
        config = re.sub(r"(min_replicas|initial_replicas|max_replicas): \d+", rf"\1: {REPLICAS}", config)
        config_path = workspace / "ray-serve.yaml"
        config_path.write_text(config)
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", str(config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workspace,
        )
        deadline = time.monotonic() + 240
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
        pytest.fail(f"Ray Serve was not ready within 240 s:\n{self.read_log()[-4000:]}")

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        # As a user stops `serve run`: Ctrl-C shuts the application and its local cluster down.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory) -> RayServeApplication:
    application = RayServeApplication(tmp_path_factory.mktemp("ray-serve"))
    yield application
    application.stop()


@pytest.fixture(scope="module")
def ray_client(ray_serve: RayServeApplication):
    with httpx.Client(base_url=ray_serve.url, timeout=120) as session:
        yield session


def test_predict_png_has_the_seeds_two_panels_at_the_image_size(ray_client, real_image_path):
    response = ray_client.post("/predict/", files={"file": real_image_path.read_bytes()})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = decode_png(response.content)
    original = decode_png(real_image_path.read_bytes())
    assert image.shape[:2] == (original.shape[0], 2 * original.shape[1])


def test_json_results_equal_the_single_process_servers(ray_client, client, real_image_path):
    request = {"files": {"file": real_image_path.read_bytes()}, "params": {"format": "json", "seed": 3}}
    replicated = ray_client.post("/predict/", **request).json()
    single = client.post("/predict/", **request).json()
    assert replicated["model"] == single["model"]
    assert replicated["mask_rle"] == single["mask_rle"]
    assert replicated["lesion_area_pixels"] == single["lesion_area_pixels"] > 0
    assert replicated["uncertainty_score"] == pytest.approx(single["uncertainty_score"], abs=1e-4)


def test_bad_input_is_the_same_clear_4xx(ray_client, client):
    replicated = ray_client.post("/predict/", files={"file": b"plain text, not a photo"})
    single = client.post("/predict/", files={"file": b"plain text, not a photo"})
    assert replicated.status_code == single.status_code == 415
    assert replicated.json() == single.json()
    assert ray_client.post("/predict/", params={"samples": 0}, files={"file": b"x"}).status_code == 422
    assert ray_client.get("/health").status_code == 200


def test_concurrent_requests_are_spread_over_the_replicas(ray_serve, ray_client, real_image_path):
    image = real_image_path.read_bytes()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: ray_client.post("/predict/", files={"file": image}).status_code, range(12)))
    assert statuses == [200] * 12
    time.sleep(1)  # replica logs reach the driver's output asynchronously
    serving_replicas = set(
        re.findall(r"ServeReplica:lesionseg:lesionseg pid=(\d+)\).*POST /predict/", ray_serve.read_log())
    )
    assert len(serving_replicas) == REPLICAS
