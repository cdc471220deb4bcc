"""Every `format=` of POST /predict/, over HTTP, on real images."""

import base64
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.api.test_predict import post_image
from tests.conftest import decode_png

from lesionseg.imaging.regions import rle_decode

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def json_result(client, original_size_image_path):
    response = post_image(client, original_size_image_path, format="json", seed=3, samples=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_mask_format_is_the_isic_scorer_png(client, original_size_image_path):
    mask = decode_png(post_image(client, original_size_image_path, format="mask", seed=3).content)
    width, height = Image.open(original_size_image_path).size
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}


def test_mask_format_equals_the_left_panel_of_the_png(client, real_image_path):
    mask = decode_png(post_image(client, real_image_path, format="mask", seed=3).content)
    panels = decode_png(post_image(client, real_image_path, format="png", seed=3).content)
    assert np.array_equal(mask, panels[:, : mask.shape[1], 0])


def test_uncertainty_format_is_16_bit_std_on_a_fixed_scale(client, original_size_image_path, json_result):
    levels = decode_png(post_image(client, original_size_image_path, format="uncertainty", seed=3).content)
    width, height = Image.open(original_size_image_path).size
    assert levels.shape == (height, width) and levels.dtype == np.uint16
    std = levels.astype(np.float64) / 65535 * 0.5
    assert 0 < std.max() <= 0.5
    mask = rle_decode(json_result["mask_rle"])
    assert std[mask].mean() == pytest.approx(json_result["mean_uncertainty_std_in_lesion"], abs=1e-4)


def test_overlay_is_the_photo_with_an_outline(client, original_size_image_path):
    overlay = decode_png(post_image(client, original_size_image_path, format="overlay", seed=3).content)
    photo = cv2.imread(str(original_size_image_path))
    assert overlay.shape == photo.shape
    green_outline = (overlay[..., 1] > 200) & (overlay[..., 0] < 80) & (overlay[..., 2] < 80)
    assert green_outline.sum() > 100
    # Away from the lesion, where the model is sure, the photo shows through almost unchanged.
    assert np.median(np.abs(overlay.astype(int) - photo.astype(int))) < 20


def test_json_describes_the_mask(json_result, client, original_size_image_path):
    width, height = Image.open(original_size_image_path).size
    mask = rle_decode(json_result["mask_rle"])
    assert mask.shape == (height, width)
    assert json_result["lesion_area_pixels"] == int(mask.sum())
    assert json_result["lesion_area_fraction"] == pytest.approx(mask.mean())
    x, y, box_width, box_height = json_result["bounding_box"]
    rows, columns = np.nonzero(mask)
    assert (x, y, x + box_width - 1, y + box_height - 1) == (columns.min(), rows.min(), columns.max(), rows.max())
    served = decode_png(post_image(client, original_size_image_path, format="mask", seed=3).content) == 255
    assert np.array_equal(mask, served)


def test_json_outline_traces_the_mask(json_result):
    mask = rle_decode(json_result["mask_rle"])
    polygon = np.array(json_result["outline"][0]).reshape(-1, 2).astype(np.int32)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [polygon], 1)
    overlap = (filled.astype(bool) & mask).sum() / (filled.astype(bool) | mask).sum()
    assert overlap > 0.9


def test_json_carries_trust_model_and_provenance(json_result):
    assert 0 <= json_result["uncertainty_score"] <= 1
    assert json_result["review_recommended"] == (json_result["uncertainty_score"] >= json_result["review_threshold"])
    assert 0.5 <= json_result["mean_probability_in_lesion"] <= 1
    assert json_result["model"]["name"] == "efficientnet_lite0_upernet"
    assert re.fullmatch(r"[0-9a-f]{64}", json_result["model"]["sha256"])
    assert json_result["samples"] == 10 and json_result["seed"] == 3
    assert json_result["timings_ms"]["inference"] > 0
    assert "images" not in json_result or json_result["images"] is None


def test_json_with_images_embeds_four_pngs(client, real_image_path):
    body = post_image(client, real_image_path, format="json", include_images="true", seed=0).json()
    images = {}
    for name in ("overlay", "mask", "heatmap", "probability"):
        prefix, encoded = body["images"][name].split(",", 1)
        assert prefix == "data:image/png;base64"
        images[name] = decode_png(base64.b64decode(encoded))
        assert images[name].shape[:2] == (body["height"], body["width"])
    # The probability, at 1/255 steps, is what the mask was cut from: p >= 0.5 is the mask, but for pixels
    # whose probability rounds across the threshold (within half a step of it).
    levels = images["probability"].astype(int)
    mask = images["mask"] > 0
    clear = np.abs(levels - 127.5) > 1
    assert np.array_equal(mask[clear], levels[clear] > 127.5)


def test_unknown_format_is_422(client, real_image_path):
    response = post_image(client, real_image_path, format="gif")
    assert response.status_code == 422
    assert "format" in str(response.json()["detail"])


def test_info_is_the_model_card(client):
    body = client.get("/info").json()
    assert body["name"] == "efficientnet_lite0_upernet"
    # One version everywhere: the command, the service and the embedded model's sidecar.
    version = subprocess.run([sys.executable, "-m", "lesionseg.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.split() == ["lesionseg", body["version"]] == ["lesionseg", body["card"]["model_version"]]
    assert "training" in body["card"] and "architecture" in body["card"]
    # The test server runs in the full install, with LESIONSEG_BACKEND unset: auto, and the embedded model's
    # graphs are there, so ONNX Runtime serves although PyTorch is installed.
    assert body["backend"]["name"] == "onnx" and body["backend"]["reason"].startswith("auto: ONNX Runtime on the")


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_an_orientation_exif_does_not_define_is_read_as_upright_by_every_output(
    client, tmp_path, original_size_image_path, orientation
):
    """Some cameras write 0; 9 and 65535 are not EXIF orientations either. Above 1,536 px the photo is read by
    libvips, whose turn table once raised KeyError (500) for them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation-{orientation}.jpg"
    Image.open(original_size_image_path).convert("RGB").resize((2000, 1500)).save(
        path, format="JPEG", quality=90, exif=exif
    )
    upright = decode_png(post_image(client, path, format="mask", seed=1, samples=2).content)
    assert upright.shape == (1500, 2000)
    for output in ({"format": "overlay"}, {"format": "json", "include_images": "true"}, {"format": "png"}):
        response = post_image(client, path, seed=1, samples=2, **output)
        assert response.status_code == 200, response.text
