"""Encoder + decoder, with the deterministic trunk and the sampled tail exposed separately."""

import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.model.decoder import UPerNetDecoder
from lesionseg.model.encoder import TimmEncoder


class LesionSegmenter(nn.Module):
    """Maps a normalised NCHW image batch to lesion logits at the input's resolution."""

    def __init__(self, encoder: TimmEncoder, decoder: UPerNetDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward_trunk(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder.forward_trunk(self.encoder(image))

    def forward_tail(
        self,
        trunk: list[torch.Tensor],
        output_size: tuple[int, int],
        masks: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        logits = self.decoder.forward_tail(trunk, masks)
        return F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_trunk(image), tuple(image.shape[-2:]))
