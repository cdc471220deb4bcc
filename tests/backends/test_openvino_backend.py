"""OpenVINO on the exported graphs against ONNX Runtime, on real images: equal in float32, the same masks
but for a few boundary pixels in its CPU's fastest precision and on the static int8 trunk."""

import numpy as np
import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import read_image
from lesionseg.predictor import Predictor

pytest.importorskip("openvino", reason="openvino is not installed: make test installs it")


@pytest.fixture(scope="module")
def predictors() -> dict[str, Predictor]:
    return {
        name: Predictor.from_checkpoint(DEFAULT_WEIGHTS, name)
        for name in ("onnx", "openvino", "openvino-f32", "openvino-int8")
    }


def test_openvino_in_float32_equals_onnx_runtime(predictors, isic_validation_pairs):
    for record in isic_validation_pairs[:3]:
        rgb = read_image(record.image_path)
        expected = predictors["onnx"].predict(rgb, samples=6, seed=0)
        found = predictors["openvino-f32"].predict(rgb, samples=6, seed=0)
        assert np.abs(found.model_maps.mean_probability - expected.model_maps.mean_probability).max() < 1e-4
        assert found.ood_score == pytest.approx(expected.ood_score, rel=1e-4)


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_openvino_in_bfloat16_or_int8_gives_the_same_masks_but_for_a_few_pixels(
    predictors, isic_validation_pairs, backend
):
    """Its fastest precision (bfloat16 where the CPU has it), alone or on the static int8 trunk."""
    for record in isic_validation_pairs[:3]:
        rgb = read_image(record.image_path)
        expected = predictors["onnx"].predict(rgb, samples=6, seed=0)
        found = predictors[backend].predict(rgb, samples=6, seed=0)
        assert (found.mask != expected.mask).mean() < 0.01
        assert found.out_of_distribution == expected.out_of_distribution
