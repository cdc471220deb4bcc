"""OpenVINO on the exported graphs against ONNX Runtime, on real images: equal in float32, the same masks
but for a few boundary pixels in its CPU's fastest precision and on the static int8 trunk."""

import numpy as np
import pytest
from tests.backends.mask_agreement import BOUNDARY_CELLS, farthest_disagreement_in_cells

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
def test_openvino_in_bfloat16_or_int8_moves_the_mask_boundary_by_no_more_than_its_precision(
    predictors, isic_validation_pairs, backend
):
    """Its fastest precision (bfloat16 where the CPU has it), alone or on the static int8 trunk."""
    for record in isic_validation_pairs[:3]:
        rgb = read_image(record.image_path)
        expected = predictors["onnx"].predict(rgb, samples=6, seed=0)
        found = predictors[backend].predict(rgb, samples=6, seed=0)
        input_size = predictors["onnx"].config.input_size
        assert farthest_disagreement_in_cells(expected.mask, found.mask, input_size) <= BOUNDARY_CELLS, record
        assert found.out_of_distribution == expected.out_of_distribution
