"""The seed's own model: its architecture rebuilt independently here, its checkpoint saved as the seed
saves it (with the buffers an older timm stored), imported, served, and sampled as it samples."""

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from tests.conftest import RunningServer
from torch import nn

from lesionseg.backends.pytorch_backend import TorchBackend
from lesionseg.model.checkpoint import load_checkpoint
from lesionseg.model.config import get_config
from lesionseg.model.seed_import import import_seed
from lesionseg.model.sidecar import CheckpointError
from lesionseg.uncertainty.full_pass_reference import full_pass_logits
from lesionseg.uncertainty.sampling import draw_channel_masks, sample_logits

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

SIZE = 224


class ReferenceDecoder(nn.Module):
    """The seed's decoder as its model.py describes it, written here without our code: plain Dropout2d."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        quarter = c3 // 4

        class Pooling(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.pool_layers = nn.ModuleList(
                    nn.Sequential(
                        nn.AdaptiveAvgPool2d(size),
                        nn.Conv2d(c3, quarter, 1, bias=False),
                        nn.GroupNorm(8, quarter),
                        nn.ReLU(inplace=True),
                    )
                    for size in (1, 2, 3, 6)
                )
                self.conv = nn.Conv2d(c3 + 4 * quarter, c3, 1, bias=False)

            def forward(self, x):
                branches = [F.interpolate(layer(x), size=x.shape[2:], mode="bilinear") for layer in self.pool_layers]
                return self.conv(torch.cat([x, *branches], 1))

        self.ppm = Pooling()
        self.lateral_conv2 = nn.Conv2d(c2, c3, 1)
        self.conv3 = nn.Sequential(nn.Conv2d(c3, c2, 1), nn.Dropout2d(0.1))
        self.lateral_conv1 = nn.Conv2d(c1, c2, 1)
        self.conv2 = nn.Sequential(nn.Conv2d(c2, c1, 1), nn.Dropout2d(0.1))
        self.lateral_conv0 = nn.Conv2d(c0, c1, 1)
        self.conv1 = nn.Sequential(nn.Conv2d(c1, c0, 1), nn.Dropout2d(0.1))
        self.segmentation_head = nn.Conv2d(c0, 1, 1)

    def forward(self, features):
        f0, f1, f2, f3 = features
        x = self.conv3(F.interpolate(self.ppm(f3), size=f2.shape[2:], mode="bilinear") + self.lateral_conv2(f2))
        x = self.conv2(F.interpolate(x, size=f1.shape[2:], mode="bilinear") + self.lateral_conv1(f1))
        x = self.conv1(F.interpolate(x, size=f0.shape[2:], mode="bilinear") + self.lateral_conv0(f0))
        return self.segmentation_head(F.interpolate(x, size=(SIZE, SIZE), mode="bilinear"))


class ReferenceSeed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = timm.create_model("swin_tiny_patch4_window7_224", features_only=True, pretrained=False)
        self.decoder = ReferenceDecoder(self.encoder.feature_info.channels())

    def forward(self, x):
        features = [feature.permute(0, 3, 1, 2) for feature in self.encoder(x)]
        return F.interpolate(self.decoder(features), size=(SIZE, SIZE), mode="bilinear")


@pytest.fixture(scope="module")
def reference() -> ReferenceSeed:
    torch.manual_seed(0)
    model = ReferenceSeed().eval()
    # Random weights everywhere, so a key landing in the wrong place cannot go unnoticed.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    return model


def saved_as_the_seed_does(model: nn.Module, path: Path, older_timm: bool = False) -> Path:
    state = dict(model.state_dict())
    if older_timm:
        # Older timm stored these rebuilt buffers, and named the stages `layers.N`.
        for name in [name for name in state if name.endswith("attn.relative_position_bias_table")]:
            state[name.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(49, 49).long()
            state[name.replace("attn.relative_position_bias_table", "attn_mask")] = torch.zeros(4, 49, 49)
        state = {name.replace("encoder.layers_", "encoder.layers."): tensor for name, tensor in state.items()}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("older_timm", [False, True])
def test_the_seeds_checkpoint_imports_and_predicts_as_the_seed_does(reference, tmp_path, older_timm):
    source = saved_as_the_seed_does(reference, tmp_path / "best_swin_upernet_main.pth", older_timm)
    sidecar = import_seed(source, tmp_path / "seed.safetensors")
    assert sidecar.entry("provenance")["source_sha256"] and sidecar.architecture["name"] == "seed_swin_upernet"
    assert sidecar.entry("provenance")["dropped_buffers"] == (24 if older_timm else 0)
    model, _ = load_checkpoint(tmp_path / "seed.safetensors")
    image = torch.rand(2, 3, SIZE, SIZE)  # the seed's input: 0–1, no mean or std
    with torch.inference_mode():
        assert torch.allclose(model(image), reference(image), atol=1e-5)


def test_sampling_runs_the_trunk_once_and_equals_the_seeds_full_passes_with_the_same_masks(reference, tmp_path):
    import_seed(saved_as_the_seed_does(reference, tmp_path / "seed.pth"), tmp_path / "seed.safetensors")
    model, _ = load_checkpoint(tmp_path / "seed.safetensors")
    config = get_config("seed_swin_upernet")
    images = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    samples, seed = 4, 11
    shared_trunk = sample_logits(TorchBackend(model, SIZE), config, images, samples, seed)
    assert np.abs(shared_trunk - full_pass_logits(model, config, images, samples, seed)).max() < 1e-4
    # The independent reference, its three Dropout2d layers replaced by the same masks.
    masks = [torch.from_numpy(mask) for mask in draw_channel_masks(config, samples, seed)]
    dropouts = [reference.decoder.conv3[1], reference.decoder.conv2[1], reference.decoder.conv1[1]]
    for sample in range(samples):
        hooks = [
            layer.register_forward_hook(lambda module, inputs, output, row=mask[sample : sample + 1]: output * row)
            for layer, mask in zip(dropouts, masks, strict=True)
        ]
        with torch.inference_mode():
            expected = reference(torch.from_numpy(images))[0, 0].numpy()
        for hook in hooks:
            hook.remove()
        assert np.abs(shared_trunk[0, sample] - expected).max() < 1e-4


def test_a_truncated_or_foreign_checkpoint_is_refused_naming_the_problem(reference, tmp_path):
    source = saved_as_the_seed_does(reference, tmp_path / "seed.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch state_dict"):
        import_seed(truncated, tmp_path / "out.safetensors")
    state = torch.load(source, weights_only=True)
    state.pop("decoder.conv2.0.bias")
    state["decoder.segmentation_head.weight"] = torch.zeros(2, 96, 1, 1)
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError) as caught:
        import_seed(tmp_path / "foreign.pth", tmp_path / "out.safetensors")
    message = str(caught.value)
    assert "1 missing: decoder.conv2.0.bias" in message and "1 unexpected: decoder.extra.weight" in message
    assert "of the wrong shape: decoder.segmentation_head.weight" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_the_imported_seed_is_served_over_http(reference, tmp_path, real_image_path):
    source = saved_as_the_seed_does(reference, tmp_path / "best_swin_upernet_main.pth", older_timm=True)
    lesionseg = Path(sys.executable).parent / "lesionseg"
    completed = subprocess.run(
        [str(lesionseg), "import-seed", str(source), str(tmp_path / "seed")], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    server = RunningServer(weights=str(tmp_path / "seed.safetensors"), backend="pytorch")
    try:
        response = httpx.post(
            f"{server.url}/predict/",
            files={"file": ("lesion.jpg", real_image_path.read_bytes(), "image/jpeg")},
            params={"format": "json", "seed": 0},
            timeout=60,
        )
        info = httpx.get(f"{server.url}/info").json()
    finally:
        server.stop()
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "seed_swin_upernet" and body["out_of_distribution"] is None
    assert info["card"]["provenance"]["imported_from"].startswith("the seed")
