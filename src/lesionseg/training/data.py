"""ISIC-layout image/mask pairs: discovery, leak-free splits, in-memory arrays, augmentation."""

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from lesionseg.imaging.preprocess import resize_to_square


@dataclass(frozen=True)
class PairRecord:
    identifier: str
    image_path: Path
    mask_path: Path
    source: str
    # Images of one lesion share a group, so a split never puts the same lesion on both sides.
    group: str


def discover_pairs(set_directory: Path) -> list[PairRecord]:
    """Pairs `images/ID.jpg` with `masks/ID_segmentation.png`; groups by `lesion_id` when
    the set has a `metadata.csv` (HAM10000), else by image."""
    set_directory = Path(set_directory)
    lesion_of_image = {}
    metadata = set_directory / "metadata.csv"
    if metadata.is_file():
        with open(metadata, newline="") as stream:
            lesion_of_image = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(stream)}
    records = []
    for image_path in sorted((set_directory / "images").glob("*.jpg")):
        identifier = image_path.stem
        mask_path = set_directory / "masks" / f"{identifier}_segmentation.png"
        if mask_path.is_file():
            records.append(
                PairRecord(
                    identifier=identifier,
                    image_path=image_path,
                    mask_path=mask_path,
                    source=set_directory.name,
                    group=lesion_of_image.get(identifier, identifier),
                )
            )
    if not records:
        raise FileNotFoundError(f"no image/mask pairs under {set_directory}")
    return records


def is_validation(record: PairRecord, validation_fraction: float, split_seed: int) -> bool:
    """A stable split: a hash of the group decides, so adding images never reshuffles old ones."""
    digest = hashlib.sha256(f"{split_seed}:{record.source}:{record.group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction


def split_pairs(
    records: list[PairRecord], validation_fraction: float, split_seed: int = 0
) -> tuple[list[PairRecord], list[PairRecord]]:
    training = [r for r in records if not is_validation(r, validation_fraction, split_seed)]
    validation = [r for r in records if is_validation(r, validation_fraction, split_seed)]
    return training, validation


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"cannot read mask {path}")
    return mask


def calibration_halves(validation: list[PairRecord], split_seed: int = 0) -> tuple[list[PairRecord], list[PairRecord]]:
    """Splits validation pairs into a half that fits calibration and a half that reports on it,
    so the uncertainty numbers are never measured on the pixels they were tuned on."""
    fitting = [r for r in validation if is_validation(r, 0.5, split_seed + 1)]
    reporting = [r for r in validation if not is_validation(r, 0.5, split_seed + 1)]
    return fitting, reporting


def load_square_arrays(
    records: list[PairRecord], size: int, description: str, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every pair once into uint8 arrays: images N×S×S×3, masks N×S×S (0 or 1)."""
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(records), size, size), dtype=np.uint8)
    for index, record in enumerate(tqdm(records, desc=description, unit="image", disable=not show_progress)):
        images[index] = resize_to_square(read_rgb(record.image_path), size)
        mask = cv2.resize(read_mask(record.mask_path), (size, size), interpolation=cv2.INTER_LINEAR)
        masks[index] = mask > 128
    return images, masks


def build_augmentation() -> v2.Compose:
    """Joint image/mask augmentation. Dermoscopy has no up or left, so any rotation or flip is fair."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(degrees=180, translate=(0.05, 0.05), scale=(0.85, 1.2)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03),
        ]
    )


class AugmentedPairs(torch.utils.data.Dataset):
    """Square uint8 pairs in memory; each item comes out augmented as (HWC uint8 image, HW mask)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: bool) -> None:
        self.images = images
        self.masks = masks
        self.augmentation = build_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(torch.from_numpy(self.images[index]).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(self.masks[index])[None])
        if self.augmentation is not None:
            image, mask = self.augmentation(image, mask)
        return image.permute(1, 2, 0).contiguous(), mask[0].float()
