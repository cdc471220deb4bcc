"""The static int8 trunk (`lesionseg quantise`, `--backend onnx-int8`) against ONNX Runtime in float32 on real
images, its link to the float graph it was quantised from, and the quantisation drawing only training images."""

import pytest
from tests.backends.mask_agreement import BOUNDARY_CELLS, farthest_disagreement_in_cells

from lesionseg.backends.onnx_backend import OnnxBackend
from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.pairs import read_image
from lesionseg.data.splits import Split, select_pairs
from lesionseg.model.sidecar import CheckpointError, file_sha256, read_sidecar
from lesionseg.predictor import Predictor


@pytest.fixture(scope="module")
def predictors() -> dict[str, Predictor]:
    return {name: Predictor.from_checkpoint(DEFAULT_WEIGHTS, name) for name in ("onnx", "onnx-int8")}


@pytest.mark.slow  # quantises, or runs two graphs, over real images
def test_int8_trunk_moves_the_mask_boundary_by_no_more_than_its_precision(predictors, isic_validation_pairs):
    """On any x86 CPU, VNNI or not: see tests/backends/mask_agreement.py for the bound."""
    input_size = predictors["onnx"].config.input_size
    for record in isic_validation_pairs[:8]:
        rgb = read_image(record.image_path)
        expected = predictors["onnx"].predict(rgb, samples=6, seed=0)
        found = predictors["onnx-int8"].predict(rgb, samples=6, seed=0)
        assert farthest_disagreement_in_cells(expected.mask, found.mask, input_size) <= BOUNDARY_CELLS, record
        assert found.out_of_distribution == expected.out_of_distribution


def test_int8_trunk_is_refused_when_it_does_not_belong_to_the_float_export():
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    export = sidecar.entry("onnx")
    reexported = sidecar.with_entries(onnx={**export, "trunk": {**export["trunk"], "sha256": "0" * 64}})
    # A new export also changes the float trunk's file; only the link is under test here.
    with pytest.raises(CheckpointError):
        OnnxBackend(DEFAULT_WEIGHTS, reexported, int8_trunk=True)
    stale = sidecar.with_entries(onnx_int8={**sidecar.entry("onnx_int8"), "float_trunk_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="quantised from another export"):
        OnnxBackend(DEFAULT_WEIGHTS, stale, int8_trunk=True)
    never_quantised = sidecar.with_entries(onnx_int8=None)
    with pytest.raises(CheckpointError, match="run `lesionseg quantise` first"):
        OnnxBackend(DEFAULT_WEIGHTS, never_quantised, int8_trunk=True)
    assert OnnxBackend(DEFAULT_WEIGHTS, never_quantised).has_descriptor, "the float backend does not need it"


@pytest.mark.slow  # quantises, or runs two graphs, over real images
def test_quantise_calibrates_on_training_images_only_and_records_the_graph(data_root, tmp_path):
    pytest.importorskip("onnx", reason="quantising needs onnx, part of lesionseg[train]")
    from lesionseg.backends.quantise import calibration_image_paths, quantise_trunk

    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    sets = ["isic2018", "ham10000"]
    paths = calibration_image_paths(data_root, sets, 80, 0, sidecar)
    held_out = {
        record.image_path
        for name in sets
        for record in select_pairs(data_root, name, "held-out", Split.of_model(sidecar.training))
    }
    assert len(paths) == 160 and not held_out.intersection(paths)
    assert paths == calibration_image_paths(data_root, sets, 80, 0, sidecar), "the same seed, the same images"

    output = tmp_path / "trunk.int8.onnx"
    record = quantise_trunk(DEFAULT_WEIGHTS, data_root, ["isic2018"], images_per_set=2, output_path=output)
    assert record["trunk"]["sha256"] == file_sha256(output)
    assert record["float_trunk_sha256"] == sidecar.onnx.trunk.sha256
    assert record["calibration"]["images"] == 2
    assert read_sidecar(DEFAULT_WEIGHTS) == sidecar, "an output path leaves the shipped sidecar alone"
