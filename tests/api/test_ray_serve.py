"""The app replicated by Ray Serve, from deploy/ray-serve.yaml on a local Ray cluster, over HTTP:
the same endpoints and contracts as the single-process `lesionseg serve`."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.conftest import RayServeApplication, decode_png

# Slow tier (`make test-fast` leaves it out): each test starts a local Ray cluster.
pytestmark = pytest.mark.slow

REPLICAS = 2


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory) -> RayServeApplication:
    application = RayServeApplication(tmp_path_factory.mktemp("ray-serve"), REPLICAS)
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


def replicas_that_served(ray_serve: RayServeApplication) -> set[str]:
    return set(re.findall(r"ServeReplica:lesionseg:lesionseg pid=(\d+)\).*POST /predict/", ray_serve.read_log()))


def test_concurrent_requests_are_spread_over_the_replicas(ray_serve, ray_client, real_image_path):
    """Waited on, not timed: replica logs reach the driver's output asynchronously (later the busier the
    machine), and a replica still loading its model when /ready first answers gets no traffic yet. It failed
    once when read a fixed second after one round. So: rounds of 12 concurrent requests, each followed by
    reading the log until every replica is seen, a few rounds at most."""
    image = real_image_path.read_bytes()
    serving_replicas: set[str] = set()
    for _ in range(5):
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda _: ray_client.post("/predict/", files={"file": image}).status_code, range(12))
            )
        assert statuses == [200] * 12
        for _ in range(100):
            serving_replicas = replicas_that_served(ray_serve)
            if len(serving_replicas) == REPLICAS:
                return
            time.sleep(0.2)
    assert len(serving_replicas) == REPLICAS
