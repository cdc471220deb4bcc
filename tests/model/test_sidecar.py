"""The typed sidecar: read once and checked, written back as it was, and never written damaged."""

import json
import shutil

import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.sidecar import CheckpointError, read_sidecar, sidecar_path, update_sidecar


@pytest.fixture
def weights(tmp_path):
    copied = tmp_path / "model.safetensors"
    shutil.copy(sidecar_path(DEFAULT_WEIGHTS), sidecar_path(copied))
    return copied


def test_the_shipped_sidecar_reads_into_types_and_back_unchanged():
    sidecar = read_sidecar(DEFAULT_WEIGHTS)
    written = json.loads(sidecar_path(DEFAULT_WEIGHTS).read_text())
    assert sidecar.as_json() == written
    assert sidecar.calibration.temperature == written["calibration"]["temperature"]
    assert sidecar.out_of_distribution.threshold == written["out_of_distribution"]["threshold"]
    assert sidecar.onnx.trunk.sha256 == written["onnx"]["trunk"]["sha256"]
    assert sidecar.entry("evaluation") == written["evaluation"], "what only describes the model is kept as written"
    assert sidecar.version == written["model_version"]


def test_a_sidecar_without_calibration_gets_the_defaults_training_used(weights):
    written = json.loads(sidecar_path(weights).read_text())
    del written["calibration"]
    sidecar_path(weights).write_text(json.dumps(written))
    sidecar = read_sidecar(weights)
    assert (sidecar.calibration.temperature, sidecar.calibration.review_threshold) == (1.0, 0.2)
    assert "calibration" not in sidecar.as_json(), "a default is not written back as if it had been measured"


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda written: written["calibration"].update(temperature="warm"), "calibration.temperature"),
        (lambda written: written.pop("sha256"), "sha256"),
        (lambda written: written["onnx"]["tail"].pop("sha256"), "onnx.tail.sha256"),
        (lambda written: written["coverage"].update(thresholds=[0.5]), "coverage.thresholds"),
    ],
)
def test_a_damaged_sidecar_is_refused_naming_the_entry(weights, damage, named):
    written = json.loads(sidecar_path(weights).read_text())
    damage(written)
    sidecar_path(weights).write_text(json.dumps(written))
    with pytest.raises(CheckpointError, match=f"{named}:") as refused:
        read_sidecar(weights)
    assert "pydantic" not in str(refused.value) and "http" not in str(refused.value)


def test_an_update_that_would_damage_the_sidecar_is_not_written(weights):
    before = sidecar_path(weights).read_bytes()
    with pytest.raises(CheckpointError, match="out_of_distribution.threshold"):
        update_sidecar(weights, "out_of_distribution", {"statistics": "x.npz", "statistics_sha256": "0"})
    assert sidecar_path(weights).read_bytes() == before
    update_sidecar(weights, "note", {"kept": True})
    assert read_sidecar(weights).entry("note") == {"kept": True}
