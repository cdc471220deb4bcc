"""ONNX Runtime against PyTorch on real images, and a server that runs with no torch at all."""

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from tests.conftest import free_port

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import read_image
from lesionseg.predictor import Predictor


@pytest.fixture(scope="module")
def onnx_predictor() -> Predictor:
    return Predictor.from_checkpoint(DEFAULT_WEIGHTS, backend="onnx")


def test_onnx_matches_pytorch_within_1e_3_on_real_images(predictor, onnx_predictor, isic_validation_pairs):
    for record in isic_validation_pairs[:5]:
        rgb = read_image(record.image_path)
        expected = predictor.predict(rgb, samples=10, seed=21)
        actual = onnx_predictor.predict(rgb, samples=10, seed=21)
        assert np.abs(expected.mean_probability - actual.mean_probability).max() < 1e-3
        assert np.abs(expected.uncertainty_std - actual.uncertainty_std).max() < 1e-3
        assert (expected.mask != actual.mask).mean() < 1e-4, "masks agree but for a rare pixel at exactly 0.5"


def test_onnx_tail_takes_any_number_of_samples(onnx_predictor, real_image_path):
    rgb = read_image(real_image_path)
    for samples in (1, 7, 64):
        prediction = onnx_predictor.predict(rgb, samples=samples, seed=0)
        assert prediction.mean_probability.shape == rgb.shape[:2]
    assert np.array_equal(
        onnx_predictor.predict(rgb, samples=10, seed=3).uncertainty_std,
        onnx_predictor.predict(rgb, samples=10, seed=3).uncertainty_std,
    )


# Any import of torch, torchvision or timm fails in this process: proof the ONNX server needs none.
TORCH_FREE_SERVER = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'timm', 'safetensors'):\n"
    "    sys.modules[name] = None\n"
    "from lesionseg.cli import main\n"
    "main(['serve', '--backend', 'onnx', '--port', sys.argv[1]])\n"
)


@pytest.mark.slow
def test_the_onnx_server_runs_without_torch_and_gives_the_same_mask(client, real_image_path, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-c", TORCH_FREE_SERVER, str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        log.seek(0)
        assert process.poll() is None, log.read()
        data = real_image_path.read_bytes()
        files = {"file": ("a.jpg", data, "image/jpeg")}
        onnx_mask = httpx.post(f"{url}/predict/", files=files, params={"format": "mask", "seed": 4}, timeout=60)
        torch_mask = client.post("/predict/", files=files, params={"format": "mask", "seed": 4})
        assert onnx_mask.status_code == 200
        assert onnx_mask.content == torch_mask.content
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_graphs_exported_from_other_weights_are_refused(tmp_path):
    """Retrained weights with the old graphs beside them: the sidecar's own sha256 is right, but the graphs'
    record names the weights they came from, and those are not these."""
    from lesionseg.backends.onnx_backend import OnnxBackend
    from lesionseg.model.sidecar import CheckpointError, read_sidecar

    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    retrained = sidecar.with_entries(sha256="0" * 64)
    with pytest.raises(CheckpointError, match="exported from other weights"):
        OnnxBackend(DEFAULT_WEIGHTS, retrained)
    unlinked = {key: value for key, value in sidecar.entry("onnx").items() if key != "weights_sha256"}
    older_export = sidecar.with_entries(onnx=unlinked)
    with pytest.raises(CheckpointError, match="run `lesionseg export-onnx` again"):
        OnnxBackend(DEFAULT_WEIGHTS, older_export)
    assert OnnxBackend(DEFAULT_WEIGHTS, sidecar).has_descriptor
