"""Named model configurations: plain data, no torch, so a torch-free server can read them."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

DropoutPlacement = Literal["fusion", "pyramid"]
# "upernet": ours (decoder/UPerNetDecoder). "seed_upernet": the seed's own decoder, key for key
# (model/seed_decoder.py), so its published checkpoint can be imported.
DecoderKind = Literal["upernet", "seed_upernet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's configs for the TensorFlow-ported EfficientNet-Lite models normalise with 0.5 / 0.5.
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    encoder_name: str
    out_indices: tuple[int, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    decoder_channels: int = 64
    dropout_rate: float = 0.1
    dropout_placement: DropoutPlacement = "fusion"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder: DecoderKind = "upernet"
    # Channels of each dropout layer, in order, where they are not all `decoder_channels`.
    dropout_channels: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dropout_layer_count(self) -> int:
        """Dropout on each pyramid level and the fused map, or on the fused map only."""
        if self.dropout_channels:
            return len(self.dropout_channels)
        return len(self.out_indices) + 1 if self.dropout_placement == "pyramid" else 1

    @property
    def mask_channels(self) -> tuple[int, ...]:
        """The channel count of each dropout layer's mask, in the order the tail applies them."""
        return self.dropout_channels or (self.decoder_channels,) * self.dropout_layer_count


MODEL_CONFIGS: dict[str, ModelConfig] = {
    config.name: config
    for config in (
        ModelConfig(
            name="efficientnet_lite0_upernet",
            encoder_name="tf_efficientnet_lite0",
            out_indices=(1, 2, 3, 4),
            # 192 px: the ISIC masks were drawn at 128 px, and on a CPU 192 trains ~1.5x faster than 224.
            input_size=192,
            mean=TF_LITE_MEAN,
            std=TF_LITE_STD,
        ),
        ModelConfig(
            name="efficientnet_lite2_upernet",
            encoder_name="tf_efficientnet_lite2",
            out_indices=(1, 2, 3, 4),
            input_size=256,
            mean=TF_LITE_MEAN,
            std=TF_LITE_STD,
        ),
        # The seed's architecture. Swin's windowed attention fixes the input size at 224.
        ModelConfig(
            name="swin_tiny_upernet",
            encoder_name="swin_tiny_patch4_window7_224",
            out_indices=(0, 1, 2, 3),
            input_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            decoder_channels=128,
        ),
        # The seed's exact model: Swin-T, its UPerNet (1×1 fusions, GroupNorm pyramid pooling, dropout after
        # each of the three fusion convolutions), 224 px input in 0–1 without mean or std.
        ModelConfig(
            name="seed_swin_upernet",
            encoder_name="swin_tiny_patch4_window7_224",
            out_indices=(0, 1, 2, 3),
            input_size=224,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            decoder_channels=96,
            decoder="seed_upernet",
            dropout_channels=(384, 192, 96),
        ),
    )
}


def get_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_CONFIGS))}") from None
