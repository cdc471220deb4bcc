"""The exported graphs compute what the network computes: each image's trunk given once to the tail, with any
number of samples, for each dropout placement."""

import numpy as np
import pytest
import torch

from lesionseg.backends.onnx_backend import OnnxBackend
from lesionseg.backends.pytorch_backend import TorchBackend
from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.config import ModelConfig, get_config
from lesionseg.model.export import export_onnx
from lesionseg.model.factory import create_model
from lesionseg.model.sidecar import read_sidecar, tail_repeats_trunk
from lesionseg.uncertainty.sampling import draw_channel_masks, repeat_trunk_for_old_graphs

# Slow tier: each export traces the network with torch.export (half a minute on two cores).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("placement", ["fusion", "pyramid"])
def test_the_exported_tail_takes_each_trunk_once_and_matches_pytorch(tmp_path, placement):
    torch.manual_seed(0)
    config = ModelConfig(**{**get_config("efficientnet_lite0_upernet").to_dict(), "dropout_placement": placement})
    weights = tmp_path / "model.safetensors"
    save_checkpoint(create_model(config), config, weights)
    export_onnx(weights)
    sidecar = read_sidecar(weights)
    assert not tail_repeats_trunk(sidecar)
    onnx_backend = OnnxBackend(weights, sidecar)
    torch_backend = TorchBackend(load_checkpoint(weights)[0], config.input_size)
    images = np.random.default_rng(1).standard_normal((2, 3, config.input_size, config.input_size), np.float32)
    trunk, _ = onnx_backend.trunk(images)
    for samples in (1, 4):
        masks = draw_channel_masks(config, 2 * samples, seed=samples)
        expected = torch_backend.tail(torch_backend.trunk(images)[0], masks)
        actual = onnx_backend.tail(trunk, masks)
        assert actual.shape == (2 * samples, 1, config.input_size, config.input_size)
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


def test_graphs_exported_by_050_and_earlier_get_the_trunk_repeated_once_per_sample():
    trunk = [np.arange(2 * 3, dtype=np.float32).reshape(2, 3, 1, 1)]
    masks = [np.ones((2 * 5, 3, 1, 1), np.float32)]
    repeated = repeat_trunk_for_old_graphs(trunk, masks)
    assert repeated[0].shape == (10, 3, 1, 1)
    assert np.array_equal(repeated[0][:5], np.repeat(trunk[0][:1], 5, axis=0))
    shipped = read_sidecar(DEFAULT_WEIGHTS)
    old_export = {key: value for key, value in shipped.entry("onnx").items() if key != "tail_takes_trunk_once"}
    assert tail_repeats_trunk(shipped.with_entries(onnx=old_export))
    assert not tail_repeats_trunk(shipped)
