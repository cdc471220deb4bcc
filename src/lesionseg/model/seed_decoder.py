"""The seed's UPerNet decoder, module for module, so that its published checkpoint loads key for key.

Its shape, from the seed's model.py: pyramid pooling at (1, 2, 3, 6) on the deepest map, each pooled
branch a 1×1 convolution (no bias) to a quarter of the channels with GroupNorm(8) and ReLU, then a 1×1
convolution (no bias) back; top-down fusion with 1×1 lateral convolutions (with bias), each sum followed
by a 1×1 convolution and Dropout2d(0.1) (`conv3`, `conv2`, `conv1`); the finest map upsampled to the
input size before the 1×1 head.

Monte Carlo sampling keeps its shared trunk: everything before the first dropout runs once (the encoder,
the pyramid pooling, the first fusion's convolution, and the two lateral convolutions, which no dropout
precedes); the tail, from the first dropout on, is what is sampled.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.model.decoder import ChannelDropout, repeat_for_samples

POOL_SIZES = (1, 2, 3, 6)


class SeedPyramidPooling(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        branch_channels = in_channels // 4
        self.pool_layers = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(size),
                nn.Conv2d(in_channels, branch_channels, kernel_size=1, bias=False),
                nn.GroupNorm(num_groups=8, num_channels=branch_channels),
                nn.ReLU(inplace=True),
            )
            for size in POOL_SIZES
        )
        self.conv = nn.Conv2d(in_channels + len(POOL_SIZES) * branch_channels, in_channels, kernel_size=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = features.shape[-2:]
        pooled = [
            F.interpolate(layer(features), size=size, mode="bilinear", align_corners=False)
            for layer in self.pool_layers
        ]
        return self.conv(torch.cat([features, *pooled], dim=1))


def fusion(in_channels: int, out_channels: int, dropout_rate: float) -> nn.Sequential:
    """`convN` of the seed: a 1×1 convolution, then channel dropout (index 1, as the seed's keys have it)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1), ChannelDropout(dropout_rate))


def upsample_to(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(features, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class SeedUPerNetDecoder(nn.Module):
    def __init__(self, encoder_channels: list[int], output_size: int, dropout_rate: float = 0.1) -> None:
        super().__init__()
        c0, c1, c2, c3 = encoder_channels
        self.output_size = output_size
        self.ppm = SeedPyramidPooling(c3)
        self.lateral_conv2 = nn.Conv2d(c2, c3, kernel_size=1)
        self.conv3 = fusion(c3, c2, dropout_rate)
        self.lateral_conv1 = nn.Conv2d(c1, c2, kernel_size=1)
        self.conv2 = fusion(c2, c1, dropout_rate)
        self.lateral_conv0 = nn.Conv2d(c0, c1, kernel_size=1)
        self.conv1 = fusion(c1, c0, dropout_rate)
        self.segmentation_head = nn.Conv2d(c0, 1, kernel_size=1)

    @property
    def dropout_layers(self) -> list[ChannelDropout]:
        return [self.conv3[1], self.conv2[1], self.conv1[1]]

    def forward_trunk(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Up to the first dropout: the first fusion before its dropout, and both lateral maps."""
        f0, f1, f2, f3 = features
        fused = upsample_to(self.ppm(f3), f2) + self.lateral_conv2(f2)
        return [self.conv3[0](fused), self.lateral_conv1(f1), self.lateral_conv0(f0)]

    def forward_tail(self, trunk: list[torch.Tensor], masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        first, lateral1, lateral0 = trunk
        masks = masks if masks is not None else [None] * 3
        fused2 = self.conv3[1](first, masks[0])
        fused1 = self.conv2[1](self.conv2[0](upsample_to(fused2, lateral1) + lateral1), masks[1])
        fused0 = self.conv1[1](self.conv1[0](upsample_to(fused1, lateral0) + lateral0), masks[2])
        size = (self.output_size, self.output_size)
        return self.segmentation_head(F.interpolate(fused0, size=size, mode="bilinear", align_corners=False))

    def forward_samples(self, trunk: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        """All MC samples from each image's trunk, given once (see `UPerNetDecoder.forward_samples`)."""
        return self.forward_tail(repeat_for_samples(trunk, masks), masks)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.forward_tail(self.forward_trunk(features))
