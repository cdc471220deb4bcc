"""The trust layer over HTTP: pictures that are not dermoscopy are flagged (or refused), dermoscopy is
not, coverage masks grow with coverage, and a checkpoint without the new calibration says so."""

import io
import json
import shutil
from pathlib import Path

import httpx
import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw
from tests.conftest import RunningServer

from lesionseg.api.memory_budget import MemoryBudget
from lesionseg.api.routes.predict import ResponseFormat, predict_and_render
from lesionseg.config import DEFAULT_WEIGHTS, Settings
from lesionseg.data.pairs import read_image, read_truth
from lesionseg.data.splits import Split, select_pairs
from lesionseg.evaluation.metrics import score_masks
from lesionseg.imaging.regions import rle_decode
from lesionseg.model.sidecar import read_sidecar
from lesionseg.predictor import Predictor
from lesionseg.segmenter import PredictionRequest, Segmenter

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def not_dermoscopy() -> dict[str, bytes]:
    """A real photograph (a portrait shipped with matplotlib), a page of text, and a flat colour."""
    page = Image.new("RGB", (640, 480), "white")
    drawing = ImageDraw.Draw(page)
    for line in range(20):
        drawing.text((20, 20 + 22 * line), f"Line {line}: the quick brown fox jumps over the lazy dog.", fill="black")
    return {
        "portrait": (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes(),
        "text": encoded(page),
        "flat colour": encoded(Image.new("RGB", (400, 300), (200, 150, 120))),
    }


def post(url: str, data: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/predict/", files={"file": ("image", data, "application/octet-stream")}, params=params)


def test_pictures_that_are_not_dermoscopy_are_flagged_and_sent_for_review(server_url, not_dermoscopy):
    for name, data in not_dermoscopy.items():
        body = post(server_url, data, format="json", seed=0).json()
        assert body["out_of_distribution"] is True and body["ood_score"] >= 1.0, (name, body["ood_score"])
        assert body["review_recommended"] is True, name


def test_the_image_formats_carry_the_flag_in_headers(server_url, not_dermoscopy, real_image_path):
    flagged = post(server_url, not_dermoscopy["portrait"], format="png")
    assert flagged.headers["x-lesionseg-out-of-distribution"] == "true"
    assert float(flagged.headers["x-lesionseg-ood-score"]) >= 1.0
    assert flagged.headers["x-lesionseg-review-recommended"] == "true"
    lesion = post(server_url, real_image_path.read_bytes(), format="mask")
    assert lesion.headers["x-lesionseg-out-of-distribution"] == "false"


def test_held_out_dermoscopy_is_not_flagged(server_url, data_root):
    """The first 20 ISIC images of the report half, which chose nothing; about 2 % are expected flagged."""
    records = select_pairs(data_root, "isic2018", "test", Split())[:20]
    flags = [post(server_url, record.image_path.read_bytes(), format="json").json() for record in records]
    assert sum(body["out_of_distribution"] for body in flags) <= 1
    assert all(body["ood_score"] is not None for body in flags)


@pytest.fixture(scope="module")
def refusing_server():
    server = RunningServer(refuse_out_of_distribution="true")
    yield server
    server.stop()


def test_under_the_setting_a_picture_that_is_not_dermoscopy_is_refused(
    refusing_server, not_dermoscopy, real_image_path
):
    for format in ("json", "png", "mask"):
        response = post(refusing_server.url, not_dermoscopy["portrait"], format=format)
        assert response.status_code == 422
        assert "does not look like dermoscopy" in response.json()["detail"]
    assert post(refusing_server.url, real_image_path.read_bytes(), format="mask").status_code == 200


def test_the_coverage_mask_grows_as_coverage_rises_with_the_sidecars_threshold(server_url, real_image_path):
    thresholds = read_sidecar(DEFAULT_WEIGHTS).coverage.thresholds
    areas = []
    for coverage in (0.8, 0.9, 0.95, 0.99):
        body = post(server_url, real_image_path.read_bytes(), format="json", seed=0, coverage=coverage).json()
        assert body["coverage"] == coverage and body["threshold"] == thresholds[f"{coverage:.2f}"]
        areas.append(body["lesion_area_pixels"])
    assert areas == sorted(areas) and areas[-1] > areas[0]


def test_coverage_and_threshold_together_are_refused(server_url, real_image_path):
    response = post(server_url, real_image_path.read_bytes(), coverage=0.9, threshold=0.5)
    assert response.status_code == 422 and "either threshold or coverage" in response.json()["detail"]
    assert post(server_url, real_image_path.read_bytes(), coverage=0.2).status_code == 422


@pytest.fixture(scope="module")
def checkpoint_before_the_trust_layer(tmp_path_factory) -> Path:
    """The shipped weights with a sidecar as it was before: no gate, no coverage calibration."""
    folder = tmp_path_factory.mktemp("old-checkpoint")
    weights = folder / "old.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    sidecar = read_sidecar(DEFAULT_WEIGHTS).as_json()
    for key in ("out_of_distribution", "coverage", "onnx"):
        sidecar.pop(key, None)
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    return weights


def test_a_checkpoint_without_the_gate_reports_it_unavailable_never_in_domain(
    checkpoint_before_the_trust_layer, real_image_path
):
    predictor = Predictor.from_checkpoint(checkpoint_before_the_trust_layer)
    assert predictor.gate is None
    segmenter, request = Segmenter(predictor, Settings()), PredictionRequest(samples=4, seed=0)
    budget = MemoryBudget(512 * 1024 * 1024)
    data = real_image_path.read_bytes()
    content, _, headers = predict_and_render(data, segmenter, request, ResponseFormat("json"), budget)
    body = json.loads(content)
    assert body["out_of_distribution"] is None and body["ood_score"] is None
    assert headers["X-Lesionseg-Out-Of-Distribution"] == "unavailable"
    with pytest.raises(ValueError, match="no coverage calibration"):
        predictor.coverage_threshold(0.9)


def test_the_gate_gives_the_same_score_on_both_backends(predictor, real_image_path):
    onnx = Predictor.from_checkpoint(DEFAULT_WEIGHTS, "onnx")
    rgb = read_image(real_image_path)
    scores = [backend.predict(rgb, samples=2, seed=0).ood_score for backend in (predictor, onnx)]
    assert np.isclose(scores[0], scores[1], rtol=1e-3), scores


def test_flip_tta_pools_three_views_and_is_as_accurate_as_plain_sampling(server_url, data_root):
    records = select_pairs(data_root, "isic2018", "test", Split())[:8]
    jaccards = {False: [], True: []}
    for record in records:
        truth = read_truth(record.mask_path)
        for tta in (False, True):
            params = {"format": "json", "seed": 0, "tta": str(tta).lower()}
            body = post(server_url, record.image_path.read_bytes(), **params).json()
            jaccards[tta].append(score_masks(rle_decode(body["mask_rle"]), truth).jaccard)
    assert np.mean(jaccards[True]) >= np.mean(jaccards[False]) - 0.01, jaccards
    assert jaccards[True] != jaccards[False], "the flipped views change the result"


def test_a_gate_whose_statistics_are_missing_or_altered_stops_loading(tmp_path):
    from lesionseg.model.sidecar import CheckpointError

    weights = tmp_path / "copy.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), weights.with_suffix(".json"))
    with pytest.raises(CheckpointError, match="default.ood.npz is missing"):
        Predictor.from_checkpoint(weights)
    statistics = tmp_path / "default.ood.npz"
    statistics.write_bytes(DEFAULT_WEIGHTS.with_suffix(".ood.npz").read_bytes()[:-8] + bytes(8))
    with pytest.raises(CheckpointError, match="does not match"):
        Predictor.from_checkpoint(weights)
