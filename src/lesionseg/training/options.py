"""Training options, with their defaults: plain data, so the CLI can show them without importing torch."""

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainingOptions:
    model: str = "efficientnet_lite0_upernet"
    data_root: Path = Path("../shared/data")
    sets: tuple[str, ...] = ("isic2018", "ham10000")
    output_directory: Path = Path("runs/efficientnet_lite0_upernet")
    epochs: int = 12
    samples_per_epoch: int = 4000
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    held_out_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    encoder_weights: str = "imagenet"
    # A checkpoint to start from (fine-tuning), instead of ImageNet's encoder and a fresh decoder.
    initial_weights: Path | None = None
    # "camera": also another clinic's light, optics and compression (lesionseg.imaging.shifts); "basic": 0.4.0's.
    augmentation: str = "camera"
    threads: int = 0
    checkpoint_every: int = 50
    # Processes that augment the next batches while this one trains; 0 augments in this process.
    loader_workers: int = 2
    limit_pairs: int = 0
    command: list[str] = field(default_factory=lambda: list(sys.argv))
