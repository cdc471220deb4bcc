"""UPerNet decoder (pyramid pooling + top-down FPN fusion) with channel dropout for MC sampling.

The decoder is split in two at its first dropout layer: `forward_trunk` is deterministic and runs
once per image; `forward_tail` holds every dropout layer and is what Monte Carlo sampling repeats.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.model.config import DropoutPlacement


def repeat_for_samples(trunk: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each image's trunk once per sample, for a tail whose dropout comes before a non-linear layer."""
    images = trunk[0].shape[0]
    return [
        level.unsqueeze(1).expand(images, masks[0].shape[0] // images, *level.shape[1:]).flatten(0, 1)
        for level in trunk
    ]


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ChannelDropout(nn.Dropout2d):
    """`Dropout2d` that can also apply a channel mask drawn by the caller.

    Drawing masks outside the layer (`uncertainty.sampling.draw_channel_masks`) lets MC sampling use
    its own seeded generator (reproducible, thread-safe, the same on both backends) and apply all
    samples as one batch.
    """

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            return features * mask
        return super().forward(features)


class PyramidPoolingModule(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, scales: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), conv_norm_relu(in_channels, out_channels, 1)) for scale in scales
        )
        self.bottleneck = conv_norm_relu(in_channels + len(scales) * out_channels, out_channels, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = features.shape[-2:]
        pooled = [
            F.interpolate(stage(features), size=size, mode="bilinear", align_corners=False) for stage in self.stages
        ]
        return self.bottleneck(torch.cat([features, *pooled], dim=1))


class UPerNetDecoder(nn.Module):
    """Fuses a 4-level feature pyramid into one logit map at the finest level's stride."""

    def __init__(
        self,
        encoder_channels: list[int],
        channels: int = 64,
        dropout_rate: float = 0.1,
        dropout_placement: DropoutPlacement = "fusion",
    ) -> None:
        super().__init__()
        self.dropout_placement = dropout_placement
        self.pyramid_pooling = PyramidPoolingModule(encoder_channels[-1], channels)
        self.lateral_convs = nn.ModuleList(conv_norm_relu(c, channels, 1) for c in encoder_channels[:-1])
        self.fpn_convs = nn.ModuleList(conv_norm_relu(channels, channels, 3) for _ in encoder_channels[:-1])
        level_count = len(encoder_channels)
        self.pyramid_dropouts = nn.ModuleList(
            ChannelDropout(dropout_rate) for _ in range(level_count if dropout_placement == "pyramid" else 0)
        )
        self.fusion = conv_norm_relu(level_count * channels, channels, 3)
        self.fusion_dropout = ChannelDropout(dropout_rate)
        self.head = nn.Conv2d(channels, 1, kernel_size=1)

    @property
    def dropout_layers(self) -> list[ChannelDropout]:
        return [*self.pyramid_dropouts, self.fusion_dropout]

    def forward_trunk(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Everything before the first dropout: the pyramid levels, or the fused map."""
        top_down = self.pyramid_pooling(features[-1])
        levels = [top_down]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[index](features[index])
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            levels.insert(0, self.fpn_convs[index](top_down))
        if self.dropout_placement == "pyramid":
            return levels
        return [self.fusion(self._upsample_and_concat(levels))]

    def forward_tail(self, trunk: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Dropout onwards. `masks`, one per dropout layer, replace the layers' own sampling."""
        masks = masks if masks is not None else [None] * len(self.dropout_layers)
        if self.dropout_placement == "pyramid":
            levels = [
                dropout(level, mask)
                for dropout, level, mask in zip(self.pyramid_dropouts, trunk, masks[:-1], strict=True)
            ]
            fused = self.fusion(self._upsample_and_concat(levels))
        else:
            fused = trunk[0]
        return self.head(self.fusion_dropout(fused, masks[-1]))

    def forward_samples(self, trunk: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        """All MC samples from each image's trunk, given once: `trunk` holds N images, each mask N·T rows;
        logits N·T×1×h×w, row n·T + t sample t of image n. With the dropout just before the 1×1 head
        ("fusion"), a sample's logits are that head with the sample's mask folded into its weights, since
        head(fused · mask) = (weight · mask) · fused + bias: one (T×C)·(C×hw) product per image, and no
        per-sample copy of the fused map, which cost more than the rest of the tail together."""
        if self.dropout_placement != "fusion":
            return self.forward_tail(repeat_for_samples(trunk, masks), masks)
        fused = trunk[0]
        images, channels, height, width = fused.shape
        weights = masks[-1].reshape(images, -1, channels) * self.head.weight.reshape(1, 1, channels)
        logits = torch.matmul(weights, fused.reshape(images, channels, height * width)) + self.head.bias
        return logits.reshape(-1, 1, height, width)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.forward_tail(self.forward_trunk(features))

    @staticmethod
    def _upsample_and_concat(levels: list[torch.Tensor]) -> torch.Tensor:
        size = levels[0].shape[-2:]
        upsampled = [levels[0]] + [
            F.interpolate(level, size=size, mode="bilinear", align_corners=False) for level in levels[1:]
        ]
        return torch.cat(upsampled, dim=1)
