"""POST /predict/batch: several images in one request, each answered on its own."""

import numpy as np
import pytest
from PIL import Image

from lesionseg.imaging.regions import rle_decode

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def test_batch_answers_each_image_in_order_and_isolates_a_bad_one(client, isic_validation_pairs):
    records = isic_validation_pairs[:3]
    files = [("files", (r.image_path.name, r.image_path.read_bytes(), "image/jpeg")) for r in records]
    files.insert(1, ("files", ("notes.jpg", b"not an image at all", "image/jpeg")))
    response = client.post("/predict/batch", files=files, params={"seed": 2, "samples": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["filename"] for item in results] == [records[0].image_path.name, "notes.jpg"] + [
        r.image_path.name for r in records[1:]
    ]
    assert [item["status"] for item in results] == [200, 415, 200, 200]
    assert "not an image" in results[1]["detail"]
    for item, record in zip([results[0], *results[2:]], records, strict=True):
        width, height = Image.open(record.image_path).size
        assert rle_decode(item["result"]["mask_rle"]).shape == (height, width)
        assert item["result"]["samples"] == 5 and item["result"]["seed"] == 2


def test_batch_matches_single_requests(client, real_image_path):
    data = real_image_path.read_bytes()
    single = client.post(
        "/predict/", files={"file": ("a.jpg", data, "image/jpeg")}, params={"format": "json", "seed": 9}
    )
    batch = client.post("/predict/batch", files=[("files", ("a.jpg", data, "image/jpeg"))], params={"seed": 9})
    assert np.array_equal(
        rle_decode(single.json()["mask_rle"]), rle_decode(batch.json()["results"][0]["result"]["mask_rle"])
    )


def test_batch_is_bounded(client, real_image_path):
    data = real_image_path.read_bytes()
    too_many = [("files", (f"{index}.jpg", data, "image/jpeg")) for index in range(17)]
    response = client.post("/predict/batch", files=too_many)
    assert response.status_code == 413 and "at most 16" in response.json()["detail"]
    empty = client.post("/predict/batch")
    assert empty.status_code == 400 and "files" in empty.json()["detail"]
