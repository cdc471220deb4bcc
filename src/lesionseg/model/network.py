"""Encoder + decoder, with the deterministic trunk and the sampled tail exposed separately."""

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.model.decoder import UPerNetDecoder
from lesionseg.model.encoder import TimmEncoder


def channel_statistics(features: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> N×2C: each channel's mean, then each channel's standard deviation."""
    return torch.cat([features.mean(dim=(2, 3)), features.std(dim=(2, 3))], dim=1)


class SegmentationNetwork(nn.Module):
    """Maps a normalised NCHW image batch to lesion logits at the input's resolution."""

    def __init__(self, encoder: TimmEncoder, decoder: UPerNetDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward_trunk(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_trunk_and_descriptor(image)[0]

    def forward_trunk_and_descriptor(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The trunk, and one vector per image for the out-of-distribution gate: each channel's mean and
        standard deviation over the image, of the trunk's last level and of the encoder's deepest
        features. Both are computed anyway; pooling them costs nothing measurable."""
        features = self.encoder(image)
        levels = self.decoder.forward_trunk(features)
        descriptor = torch.cat([channel_statistics(levels[-1]), channel_statistics(features[-1])], dim=1)
        return levels, descriptor

    def forward_tail(
        self,
        trunk: list[torch.Tensor],
        output_size: tuple[int, int],
        masks: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        logits = self.decoder.forward_tail(trunk, masks)
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)

    def forward_samples(
        self, trunk: list[torch.Tensor], output_size: tuple[int, int], masks: list[torch.Tensor]
    ) -> torch.Tensor:
        """The tail for T samples of each of N images, from the trunk of each image given once: logits
        N·T×1×H×W, the same as `forward_tail` on the trunk repeated T times."""
        logits = self.decoder.forward_samples(trunk, masks)
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_trunk(image), tuple(image.shape[-2:]))
