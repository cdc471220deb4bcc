import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.config import get_config
from lesionseg.model.factory import create_model
from lesionseg.model.sidecar import CheckpointError, file_sha256, sidecar_path


@pytest.fixture
def saved(tmp_path):
    config = get_config("efficientnet_lite0_upernet")
    model = create_model(config).eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, config, path, metadata={"training": {"note": "test"}})
    return model, path


def test_round_trip_gives_the_same_outputs(saved):
    model, path = saved
    loaded, sidecar = load_checkpoint(path)
    image = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.equal(model(image), loaded(image))
    assert sidecar.architecture["name"] == "efficientnet_lite0_upernet"
    assert sidecar.sha256 == file_sha256(path)
    assert sidecar.training == {"note": "test"}


def test_missing_tensor_is_a_clear_error(saved):
    _, path = saved
    tensors = load_file(str(path))
    del tensors["decoder.head.weight"]
    save_file(tensors, str(path))
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. decoder\.head\.weight\)"):
        load_checkpoint(path)


def test_unexpected_tensor_is_a_clear_error(saved):
    _, path = saved
    tensors = load_file(str(path))
    tensors["decoder.extra"] = torch.zeros(1)
    save_file(tensors, str(path))
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="1 unexpected"):
        load_checkpoint(path)


def test_changed_file_fails_its_sha256(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(path)


def test_wrong_architecture_in_sidecar_is_refused(saved):
    _, path = saved
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["architecture"]["decoder_channels"] = 32
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(path)


def pickle_checkpoint(saved, tmp_path):
    model, path = saved
    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = file_sha256(pickled)
    sidecar_path(pickled).write_text(json.dumps(sidecar))
    return model, pickled


def test_pickle_checkpoints_are_refused_by_default(saved, tmp_path):
    _, pickled = pickle_checkpoint(saved, tmp_path)
    with pytest.raises(CheckpointError, match="pickle checkpoints can run code"):
        load_checkpoint(pickled)


def test_pickle_checkpoints_load_with_weights_only_when_allowed(saved, tmp_path):
    model, pickled = pickle_checkpoint(saved, tmp_path)
    loaded, _ = load_checkpoint(pickled, allow_pickle=True)
    image = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.equal(model(image), loaded(image))


def test_a_pickle_with_code_in_it_is_refused_even_when_allowed(saved, tmp_path):
    _, pickled = pickle_checkpoint(saved, tmp_path)
    torch.save({"weights": torch.zeros(1), "payload": os.system}, pickled)  # what an attack would smuggle in
    sidecar = json.loads(sidecar_path(pickled).read_text())
    sidecar["sha256"] = file_sha256(pickled)
    sidecar_path(pickled).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a plain state_dict"):
        load_checkpoint(pickled, allow_pickle=True)


def test_embedded_default_model_is_shipped_small_and_intact():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 80 * 1024 * 1024
    model, sidecar = load_checkpoint(DEFAULT_WEIGHTS)
    assert sidecar.weights_dtype == "float16"
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert "command" in sidecar.training
