"""The Python API: lesionseg.load() and Segmenter.predict, on the real model and real images."""

import doctest
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import lesionseg
from lesionseg import segmenter as segmenter_module
from lesionseg.imaging.decode import ImageRejected
from lesionseg.proposals.litemedsam import InvalidBox, box_around


@pytest.fixture(scope="module")
def segmenter() -> lesionseg.Segmenter:
    return lesionseg.load()  # auto, as the server: ONNX Runtime on the embedded model's graphs


@pytest.mark.slow  # seconds, not milliseconds: the slow tier's, not every change's
def test_the_documented_example_runs_as_written(real_image_path, tmp_path, monkeypatch):
    shutil.copy(real_image_path, tmp_path / "lesion.jpg")
    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testmod(segmenter_module, raise_on_error=False)
    assert tried >= 5 and failures == 0


def test_a_path_bytes_a_pil_image_and_an_array_give_one_result(segmenter, real_image_path):
    picture = Image.open(real_image_path)
    inputs = [real_image_path, str(real_image_path), real_image_path.read_bytes(), picture, np.asarray(picture)]
    results = [segmenter.predict(image, seed=0) for image in inputs]
    for result in results[1:]:
        assert np.array_equal(result.mask, results[0].mask)
        assert result.score == pytest.approx(results[0].score)
    first = results[0]
    assert first.mask.shape == first.probability.shape == first.uncertainty.shape == (picture.height, picture.width)
    assert first.mask.dtype == bool and first.probability.dtype == np.float32


@pytest.mark.slow
def test_to_json_is_what_the_server_returns(segmenter, client, real_image_path):
    served = client.post(
        "/predict/",
        files={"file": ("a.jpg", real_image_path.read_bytes(), "image/jpeg")},
        params={"format": "json", "seed": 0},
    ).json()
    local = segmenter.predict(real_image_path, seed=0).to_json()
    timing_free = {key for key in served if key != "timings_ms"}
    assert {key: local[key] for key in timing_free} == {key: served[key] for key in timing_free}


def test_json_text_with_images_is_to_json_with_images(segmenter, real_image_path):
    """The JSON the server sends with images, made without copies, is the Python API's dict with images."""
    result = segmenter.predict(real_image_path, seed=0)
    from_text = json.loads(result.render("json", include_images=True))
    assert set(from_text["images"]) == {"overlay", "mask", "heatmap", "probability"}
    assert from_text == result.to_json(include_images=True)


def test_arrays_that_are_not_images_are_refused_in_words(segmenter):
    with pytest.raises(ImageRejected, match="H×W×3"):
        segmenter.predict(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ImageRejected, match="at least 16"):
        segmenter.predict(np.zeros((8, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="a path, bytes, a PIL image or a NumPy array"):
        segmenter.predict(42)


def test_arrays_and_pil_images_keep_the_pixel_limit_of_an_upload(segmenter):
    """A view of 20000×20000×3 costs no memory; it must be refused before anything is copied from it."""
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20_000, 20_000, 3))
    with pytest.raises(ImageRejected, match="the limit is") as caught:
        segmenter.predict(huge)
    assert caught.value.status_code == 413
    with pytest.raises(ImageRejected, match="the limit is"):
        segmenter.predict(Image.new("1", (20_000, 20_000)))


def test_premultiplied_alpha_images_are_converted_like_any_other(segmenter, real_image_path):
    photo = Image.open(real_image_path).convert("RGBA")
    for mode in ("La", "RGBa"):
        result = segmenter.predict(photo.convert(mode), samples=1, seed=0)
        assert result.mask.shape == (photo.height, photo.width)


def test_flip_tta_is_the_default_and_a_setting_turns_it_off(segmenter, real_image_path):
    """Pooled over three views, ten samples' spread comes from 30 draws: the default's result equals an explicit
    tta=True one and differs from tta=False; LESIONSEG_DEFAULT_TTA=false (Settings) makes plain sampling the
    default."""
    from lesionseg.config import Settings

    predictor = segmenter.predictor
    default, flipped, plain = (
        segmenter.predict(real_image_path, seed=0, **options) for options in ({}, {"tta": True}, {"tta": False})
    )
    assert np.array_equal(default.uncertainty, flipped.uncertainty)
    assert not np.array_equal(default.uncertainty, plain.uncertainty)
    without = lesionseg.Segmenter(predictor, Settings(default_tta=False)).predict(real_image_path, seed=0)
    assert np.array_equal(without.uncertainty, plain.uncertainty)


@pytest.mark.slow  # seconds, not milliseconds: the slow tier's, not every change's
def test_a_proposal_without_a_box_takes_the_box_around_the_models_mask(segmenter, real_image_path):
    result = segmenter.predict(real_image_path, seed=0)
    proposal = segmenter.propose(real_image_path)
    assert proposal.box == tuple(float(side) for side in box_around(result.mask))
    assert proposal.mask.shape == result.mask.shape
    again = segmenter.propose(real_image_path.read_bytes(), proposal.box)
    assert again.embedding_kept and np.array_equal(again.mask, proposal.mask)
    with pytest.raises(InvalidBox, match="must enclose part of the"):
        segmenter.propose(real_image_path, (result.width + 1, 0, result.width + 9, 9))


def test_a_result_prints_as_a_summary_and_the_api_shows_in_dir(segmenter, real_image_path):
    import lesionseg

    result = segmenter.predict(real_image_path, seed=0, samples=2)
    text = repr(result)
    assert text.startswith(f"Result({result.width}×{result.height} px") and len(text) < 400 and "\n" not in text
    assert f"uncertainty score {result.score:.3f}" in text and "seed 0" in text
    assert {"load", "Segmenter", "Result", "PredictionRequest"} <= set(dir(lesionseg))
