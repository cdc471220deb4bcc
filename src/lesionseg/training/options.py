"""Training options, with their defaults and help: plain data, declared once. `lesionseg train` makes its
flags from these fields (`--held-out-fraction` from `held_out_fraction`), so the CLI can show them without
importing torch, and a new option needs no second declaration."""

import sys
from dataclasses import dataclass, field
from pathlib import Path


def option(default, help: str | None = None, **argparse_keywords):
    """A field with what `lesionseg train --help` says about it (and, say, its `choices`)."""
    return field(default=default, metadata={"help": help, **argparse_keywords})


@dataclass
class TrainingOptions:
    model: str = option("efficientnet_lite0_upernet", "a name from lesionseg.model.config")
    data_root: Path = option(Path("../shared/data"), "the folder holding the set folders")
    sets: tuple[str, ...] = option(("isic2018", "ham10000"), "set folders under --data-root")
    output_directory: Path | None = option(None, "default: runs/MODEL")
    epochs: int = option(12)
    samples_per_epoch: int = option(4000, "pairs drawn per epoch, balanced across the sets")
    batch_size: int = option(16, "the global batch; on a GPU, 128 or more")
    learning_rate: float = option(
        1e-3,
        "the peak at a batch of 16, after a linear warm-up, cosine decay to the end; a larger batch scales it by "
        "the square root of batch / 16 (AdamW's rule), printed at the start",
    )
    weight_decay: float = option(1e-4)
    warmup_fraction: float = option(0.03, "of all steps")
    held_out_fraction: float = option(
        0.1, "of each set's groups, kept from training: half for validation, half for test"
    )
    split_seed: int = option(0)
    seed: int = option(0)
    encoder_weights: str = option("imagenet", choices=["imagenet", "none"])
    initial_weights: Path | None = option(None, "fine-tune this .safetensors checkpoint (same model) instead")
    teachers: tuple[Path, ...] = option(
        (),
        "distil: checkpoints (at the model's input size) whose mean probability is blended into each training mask, "
        "so the model learns what their ensemble predicts",
    )
    teacher_weight: float = option(0.5, "with --teachers: the soft target is (1 - w)·mask + w·the teachers' mean")
    augmentation: str = option(
        "camera",
        "camera: also other devices' colour, exposure, vignette, blur, resolution, JPEG and close-ups "
        "(lesionseg.imaging.shifts); basic: 0.4.0's flips, affine moves and colour jitter",
        choices=["camera", "basic"],
    )
    threads: int = option(0, "torch threads; 0 = torch's choice")
    device: str = option("auto", "auto (CUDA where PyTorch sees a GPU, else the CPU), cpu, cuda or cuda:N")
    augment_on: str = option(
        "auto",
        "loader: each pair in loader processes (all of --augmentation); device: whole batches on the training "
        "device, the pairs kept there (geometry, colour and, with camera augmentation, every camera shift: zoom, "
        "cast, exposure, vignette, blur, resolution, JPEG); "
        "auto: device on a GPU, loader on the CPU",
        choices=["auto", "loader", "device"],
    )
    checkpoint_every: int = option(50, "steps")
    loader_workers: int = option(2, "processes augmenting the next batches; 0 augments in the training process")
    limit_pairs: int = option(0, "use only the first N pairs of each set")
    select_on: str = option(
        "auto",
        "the validation Jaccard that picks the best checkpoint: a set's; `mean`, every set's mean, so that a "
        "checkpoint cannot win on one source by losing on another; auto: isic2018's where it is trained on (as "
        "the shipped model was chosen), else the first set's",
    )
    # How the run was started, for its record; not a flag.
    command: list[str] = field(default_factory=lambda: list(sys.argv), metadata={"flag": False})

    def __post_init__(self) -> None:
        self.teachers = tuple(Path(teacher) for teacher in self.teachers)
        # Said now, not after the minutes it takes to decode the training pairs.
        missing = [str(teacher) for teacher in self.teachers if not teacher.is_file()]
        if missing:
            raise ValueError(f"--teachers: no such file: {', '.join(missing)}")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ValueError(f"--teacher-weight must be between 0 and 1, not {self.teacher_weight}")
        if self.output_directory is None:
            self.output_directory = Path("runs") / self.model
        if self.select_on not in ("auto", "mean", *self.sets):
            sets = ", ".join(self.sets)
            raise ValueError(f"--select-on must be auto, mean or one of the sets ({sets}), not {self.select_on!r}")
