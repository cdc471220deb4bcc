"""The segmentation network: a timm encoder, a UPerNet decoder, named configurations, checkpoints."""

from lesionseg.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lesionseg.model.network import LesionSegmenter
from lesionseg.model.registry import MODEL_CONFIGS, ModelConfig, create_model

__all__ = [
    "MODEL_CONFIGS",
    "CheckpointError",
    "LesionSegmenter",
    "ModelConfig",
    "create_model",
    "load_checkpoint",
    "save_checkpoint",
]
