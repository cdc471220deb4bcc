"""The service's container image, built with podman (`make container`: offline, on a Debian root made by
mmdebstrap and wheels downloaded here) and run as users run it: ready, predicting as the checkout does,
without torch, as non-root, serving its pages. `make test` installs podman and the rest through apt."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import decode_png, free_port

import lesionseg

# Slow tier (`make test-fast` leaves it out): builds an image and starts a container.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[1]
# As the Makefile calls it: runc and cgroupfs, which work where crun and systemd do not.
PODMAN = ["podman", "--cgroup-manager", "cgroupfs", "--runtime", "runc"]


def podman(*arguments: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CONTAINERS_CONF": str(REPOSITORY / "deploy" / "containers.conf")}
    completed = subprocess.run([*PODMAN, *arguments], capture_output=True, text=True, timeout=timeout, env=environment)
    if check:
        assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def container():
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: `make test` installs it (apt-get install podman runc mmdebstrap)")
    built = subprocess.run(["make", "container"], cwd=REPOSITORY, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    name = f"lesionseg-test-{free_port()}"
    port = free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "lesionseg")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the container was not ready within 180 s:\n{podman('logs', name, check=False).stderr}")
        yield name, url
    finally:
        podman("rm", "-f", name, check=False)


def test_the_container_is_ready_and_predicts_as_the_checkout_does(container, real_image_path):
    name, url = container
    assert httpx.get(f"{url}/ready").json()["status"] == "ready"
    files = {"file": ("lesion.jpg", real_image_path.read_bytes(), "image/jpeg")}
    served = httpx.post(f"{url}/predict/", files=files, params={"format": "mask", "seed": 0}, timeout=120)
    assert served.status_code == 200, served.text
    checkout = lesionseg.load(backend="onnx").predict(real_image_path, seed=0)
    # The same graphs on the same pinned ONNX Runtime: the same mask, but for rare pixels at exactly the
    # threshold, where a sum's order (threads) can tip them.
    assert (decode_png(served.content).astype(bool) != checkout.mask).mean() < 1e-3


def test_the_container_has_no_torch_runs_as_non_root_and_serves_its_pages(container):
    name, url = container
    no_torch = podman("exec", name, "python", "-c", "import torch", check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    for path in ("/", "/review", "/static/page.js", "/static/page.css", "/static/review.js", "/static/outline.js"):
        assert httpx.get(f"{url}{path}").status_code == 200, path


def test_the_images_size_is_reported(container):
    size = int(podman("image", "inspect", "lesionseg", "--format", "{{.Size}}").stdout)
    print(f"lesionseg image: {size / 1e6:.0f} MB")
    # The lean install: PyTorch alone (its CPU wheel) would add more than 700 MB to what is here.
    assert 0 < size < 1_500_000_000
