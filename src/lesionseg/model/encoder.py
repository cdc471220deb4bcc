"""Any timm backbone as a feature pyramid, always returned as NCHW tensors."""

import timm
import torch
from torch import nn


class TimmEncoder(nn.Module):
    """Wraps a timm `features_only` model and reports its channels and strides.

    Transformers such as Swin emit channels-last (NHWC) maps; they are turned to NCHW here,
    in one place, so the decoder never needs to know which backbone it sits on.
    """

    def __init__(self, name: str, out_indices: tuple[int, ...], **timm_kwargs) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            name, features_only=True, out_indices=out_indices, pretrained=False, **timm_kwargs
        )
        self.channels: list[int] = self.backbone.feature_info.channels()
        self.strides: list[int] = self.backbone.feature_info.reduction()
        self.channels_last_output = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(image)
        if self.channels_last_output:
            features = [feature.permute(0, 3, 1, 2).contiguous() for feature in features]
        return features
