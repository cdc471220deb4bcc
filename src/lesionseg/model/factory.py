"""The one factory that turns a named configuration into a network."""

from typing import Any

from lesionseg.model.config import ModelConfig, get_config
from lesionseg.model.decoder import UPerNetDecoder
from lesionseg.model.encoder import TimmEncoder
from lesionseg.model.network import SegmentationNetwork
from lesionseg.model.seed_decoder import SeedUPerNetDecoder


def create_model(config: ModelConfig | str, **overrides: Any) -> SegmentationNetwork:
    """Builds an untrained network from a named configuration (or a config object)."""
    if isinstance(config, str):
        config = get_config(config)
    if overrides:
        config = ModelConfig(**{**config.to_dict(), **overrides})
    encoder = TimmEncoder(config.encoder_name, config.out_indices, **config.encoder_kwargs)
    if config.decoder == "seed_upernet":
        return SegmentationNetwork(
            encoder, SeedUPerNetDecoder(encoder.channels, config.input_size, dropout_rate=config.dropout_rate)
        )
    decoder = UPerNetDecoder(
        encoder.channels,
        channels=config.decoder_channels,
        dropout_rate=config.dropout_rate,
        dropout_placement=config.dropout_placement,
    )
    return SegmentationNetwork(encoder, decoder)
