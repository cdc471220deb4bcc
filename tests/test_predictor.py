"""Which backend `auto` means for a checkpoint, and why: what /info reports."""

import shutil
from pathlib import Path

import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.sidecar import read_sidecar, update_sidecar
from lesionseg.predictor import choose_backend


def copy_of_the_embedded_model(folder: Path, with_graphs: bool) -> Path:
    for path in DEFAULT_WEIGHTS.parent.glob(f"{DEFAULT_WEIGHTS.stem}.*"):
        if with_graphs or path.suffix != ".onnx":
            shutil.copy(path, folder / path.name)
    return folder / DEFAULT_WEIGHTS.name


def test_auto_serves_the_exported_float32_graphs_on_onnx_runtime_even_beside_pytorch():
    pytest.importorskip("torch")  # the full install: PyTorch is there, and still not chosen
    choice = choose_backend("auto", DEFAULT_WEIGHTS)
    assert choice["name"] == "onnx"
    assert "float32 graphs" in choice["reason"]


def test_auto_falls_back_to_pytorch_for_a_checkpoint_without_graphs(tmp_path):
    pytest.importorskip("torch")
    choice = choose_backend("auto", copy_of_the_embedded_model(tmp_path, with_graphs=False))
    assert choice["name"] == "pytorch"
    assert "lesionseg export-onnx" in choice["reason"]


def test_auto_falls_back_to_pytorch_when_the_graphs_were_exported_from_other_weights(tmp_path):
    """Retrained weights beside an old export: the graphs would be refused, so PyTorch serves the new weights."""
    pytest.importorskip("torch")
    weights = copy_of_the_embedded_model(tmp_path, with_graphs=True)
    exported = read_sidecar(weights).entry("onnx")
    update_sidecar(weights, "onnx", {**exported, "weights_sha256": "0" * 64})
    assert choose_backend("auto", weights)["name"] == "pytorch"


@pytest.mark.parametrize("name", ["pytorch", "onnx", "onnx-int8", "openvino"])
def test_a_backend_asked_for_by_name_is_the_one_given(name):
    assert choose_backend(name, DEFAULT_WEIGHTS) == {"name": name, "reason": f"asked for by name ({name})"}
