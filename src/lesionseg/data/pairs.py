"""ISIC-layout image/mask pairs: `<set>/images/<ID>.jpg` with `<set>/masks/<ID>_segmentation.png`."""

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lesionseg.data.near_duplicates import near_duplicate_groups
from lesionseg.imaging.decode import decode_upload

# ISIC masks are 8-bit; values above this are lesion.
MASK_CUT = 128
# Images are read for training and evaluation as an upload is, with no size limit of the service's own.
UNLIMITED_PIXELS = 1 << 40


@dataclass(frozen=True)
class PairRecord:
    identifier: str
    image_path: Path
    mask_path: Path
    source: str
    # HAM10000's lesion_id, else the image: several photos of one lesion share it.
    lesion: str
    # Lesions joined with the photos listed as their near-duplicates; a split keeps a group on one side.
    group: str


def discover_pairs(set_directory: Path) -> list[PairRecord]:
    """Pairs `images/ID.jpg` with `masks/ID_segmentation.png`; groups by `lesion_id` when the set has a
    `metadata.csv` (HAM10000), else by image, then joins the groups that near-duplicates link."""
    set_directory = Path(set_directory)
    lesion_of_image = {}
    metadata = set_directory / "metadata.csv"
    if metadata.is_file():
        with open(metadata, newline="") as stream:
            lesion_of_image = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(stream)}
    found = []
    for image_path in sorted((set_directory / "images").glob("*.jpg")):
        identifier = image_path.stem
        mask_path = set_directory / "masks" / f"{identifier}_segmentation.png"
        if mask_path.is_file():
            found.append((identifier, image_path, mask_path, lesion_of_image.get(identifier, identifier)))
    if not found:
        raise FileNotFoundError(f"no image/mask pairs under {set_directory}")
    group_of = near_duplicate_groups(set_directory.name, {identifier: lesion for identifier, _, _, lesion in found})
    return [
        PairRecord(identifier, image_path, mask_path, set_directory.name, lesion, group_of[identifier])
        for identifier, image_path, mask_path, lesion in found
    ]


def read_image(path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB, upright, decoded exactly as the service decodes an upload of the same file."""
    return decode_upload(Path(path).read_bytes(), max_pixels=UNLIMITED_PIXELS, min_side=1).rgb


def read_mask(path: Path) -> np.ndarray:
    """The 8-bit mask as stored (0 skin, 255 lesion, with soft values along some edges)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"cannot read mask {path}")
    return mask


def truth_from_mask(mask: np.ndarray) -> np.ndarray:
    return mask > MASK_CUT


def read_truth(path: Path) -> np.ndarray:
    """The lesion as a boolean H×W array."""
    return truth_from_mask(read_mask(path))


def read_square_truth(path: Path, size: int) -> np.ndarray:
    """The lesion at the model's size×size, as training sees it: the 8-bit mask resized, then cut."""
    return truth_from_mask(cv2.resize(read_mask(path), (size, size), interpolation=cv2.INTER_LINEAR))
