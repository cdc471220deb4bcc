"""POST /predict/ over real HTTP against `lesionseg serve` on the embedded model."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.conftest import decode_png

from lesionseg.api.routes.predict import ResponseFormat, segment_upload
from lesionseg.config import Settings
from lesionseg.segmenter import PredictionRequest, Segmenter

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def post_image(client, path, **params):
    with open(path, "rb") as stream:
        return client.post("/predict/", files={"file": (path.name, stream, "image/jpeg")}, params=params)


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["model"] == "efficientnet_lite0_upernet"


def test_openapi_documents_predict(client):
    schema = client.get("/openapi.json").json()
    parameters = {p["name"] for p in schema["paths"]["/predict/"]["post"]["parameters"]}
    assert {"samples", "threshold", "seed"} <= parameters
    assert client.get("/docs").status_code == 200


def test_predict_returns_mask_and_heatmap_at_the_image_size(client, original_size_image_path):
    response = post_image(client, original_size_image_path, seed=0)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    picture = decode_png(response.content)
    width, height = Image.open(original_size_image_path).size
    assert picture.shape == (height, 2 * width, 3)
    mask = picture[:, :width]
    assert set(np.unique(mask)) <= {0, 255}
    assert 0.01 < (mask[..., 0] == 255).mean() < 0.95, "a real lesion image gets a real, partial mask"


def test_predicted_mask_overlaps_the_expert_mask(client, isic_validation_pairs):
    record = isic_validation_pairs[1]
    response = post_image(client, record.image_path, seed=0)
    picture = decode_png(response.content)
    truth = cv2.imread(str(record.mask_path), cv2.IMREAD_GRAYSCALE) > 128
    predicted = picture[:, : truth.shape[1], 0] == 255
    jaccard = (predicted & truth).sum() / (predicted | truth).sum()
    assert jaccard > 0.5


def test_same_seed_same_png_different_seed_different_heatmap(client, real_image_path):
    first = post_image(client, real_image_path, seed=5, samples=10)
    second = post_image(client, real_image_path, seed=5, samples=10)
    third = post_image(client, real_image_path, seed=6, samples=10)
    assert first.content == second.content
    assert first.headers["x-lesionseg-seed"] == "5"
    assert first.content != third.content


def test_samples_one_gives_a_calm_heatmap(client, real_image_path):
    # One sample of the image alone; with flip TTA (the default) one sample per view is three, which can differ.
    picture = decode_png(post_image(client, real_image_path, samples=1, seed=0, tta="false").content)
    heatmap = picture[:, picture.shape[1] // 2 :]
    # Zero spread everywhere: the heatmap's lowest colour.
    assert np.all(heatmap == heatmap[0, 0])
    pooled = decode_png(post_image(client, real_image_path, samples=1, seed=0).content)
    assert not np.all(pooled[:, pooled.shape[1] // 2 :] == heatmap[0, 0])


def test_threshold_changes_the_mask(client, real_image_path):
    low = decode_png(post_image(client, real_image_path, threshold=0.05, seed=0).content)
    high = decode_png(post_image(client, real_image_path, threshold=0.95, seed=0).content)
    width = low.shape[1] // 2
    assert (low[:, :width] == 255).sum() > (high[:, :width] == 255).sum()


def test_a_1024_by_768_photo_comes_back_at_1024_by_768(client, large_jpeg_path):
    picture = decode_png(post_image(client, large_jpeg_path, samples=10).content)
    assert picture.shape == (768, 2048, 3)


@pytest.mark.parametrize(
    "params",
    [
        {"samples": 0},
        {"samples": 65},
        {"samples": "ten"},
        {"threshold": 0},
        {"threshold": 1.5},
        {"seed": -1},
        {"heatmap": "log"},
    ],
)
def test_invalid_parameters_are_422_with_a_reason(client, real_image_path, params):
    response = post_image(client, real_image_path, **params)
    assert response.status_code == 422
    assert response.json()["detail"]


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_bad_inputs_get_clear_4xx_and_the_service_keeps_serving(client, real_image_path):
    real = real_image_path.read_bytes()
    cases = [
        ("no file", {}, None, 400, "no file"),
        ("wrong field name", {"image": ("a.jpg", real, "image/jpeg")}, None, 400, "field 'file'"),
        ("empty", {"file": ("a.jpg", b"", "image/jpeg")}, None, 400, "empty"),
        ("text", {"file": ("a.jpg", b"just some words", "image/jpeg")}, None, 415, "not an image"),
        ("truncated", {"file": ("a.jpg", real[: len(real) // 3], "image/jpeg")}, None, 400, "truncated"),
        ("wrong content type", {"file": ("a.txt", real, "text/plain")}, None, 415, "content type"),
        (
            "too many pixels",
            {"file": ("b.png", encoded(Image.new("1", (12000, 6000)), "PNG"), "image/png")},
            None,
            413,
            "pixels",
        ),
        ("1x1", {"file": ("c.png", encoded(Image.new("RGB", (1, 1)), "PNG"), "image/png")}, None, 422, "at least"),
    ]
    for name, files, data, status, words in cases:
        response = client.post("/predict/", files=files or None, data=data)
        assert response.status_code == status, (name, response.text)
        assert words in response.json()["detail"], (name, response.json())
    assert client.get("/health").status_code == 200
    assert post_image(client, real_image_path).status_code == 200


def test_too_many_bytes_is_413(client):
    # One byte over the default 30 MiB limit; refused before any decoding.
    oversized = b"\xff\xd8\xff" + bytes(30 * 1024 * 1024)
    response = client.post("/predict/", files={"file": ("big.jpg", oversized, "image/jpeg")})
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["detail"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_odd_modes_are_served(client, real_image_path, mode):
    image = Image.open(real_image_path).convert(mode)
    format = "TIFF" if mode == "CMYK" else "PNG"
    response = client.post(
        "/predict/", files={"file": (f"a.{format.lower()}", encoded(image, format), f"image/{format.lower()}")}
    )
    assert response.status_code == 200
    assert decode_png(response.content).shape[:2] == (image.height, 2 * image.width)


def test_exif_rotated_photo_is_segmented_upright(client, real_image_path):
    # The lesion in the top-left corner of a skin-coloured canvas, so a turn the wrong way moves it.
    photo = Image.open(real_image_path).convert("RGB").resize((200, 150))
    canvas = Image.new("RGB", (300, 200), tuple(int(v) for v in np.asarray(photo)[:10, :10].reshape(-1, 3).mean(0)))
    canvas.paste(photo, (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; a viewer turns it 90° clockwise to show it upright
    rotated = encoded(canvas, "JPEG", exif=exif)
    stored = np.asarray(Image.open(io.BytesIO(rotated)).convert("RGB"))  # the pixels as stored, not turned
    upright = Image.fromarray(np.ascontiguousarray(np.rot90(stored, k=-1)))

    def mask_of(data: bytes) -> np.ndarray:
        response = client.post(
            "/predict/", files={"file": ("r", data, "image/jpeg")}, params={"format": "mask", "seed": 0}
        )
        return decode_png(response.content) > 0

    mask = mask_of(rotated)
    assert mask.shape == (300, 200)
    expected, turned_the_wrong_way = mask_of(encoded(upright, "PNG")), mask_of(encoded(upright.rotate(180), "PNG"))
    assert expected.sum() > 500

    def jaccard(a: np.ndarray, b: np.ndarray) -> float:
        return (a & b).sum() / max((a | b).sum(), 1)

    assert jaccard(mask, expected) > 0.98
    assert jaccard(mask, turned_the_wrong_way) < 0.5


@pytest.mark.parametrize(
    ("format", "full_pixels"), [("png", False), ("mask", False), ("json", True), ("overlay", True)]
)
def test_include_images_decodes_the_photo_in_full_only_for_json(predictor, large_jpeg_path, format, full_pixels):
    """Only outputs that show the photo itself need its every pixel; the rest decode a 1024 px JPEG reduced."""
    shows_photo = ResponseFormat(format, include_images=True).shows_photo
    segmenter = Segmenter(predictor, Settings())
    decoded = segment_upload(large_jpeg_path.read_bytes(), segmenter, PredictionRequest(2, seed=0), shows_photo).decoded
    assert (decoded.rgb.shape[1] == 1024) == full_pixels
