"""Training pairs in memory, augmented: square uint8 arrays decoded once, and a Dataset that augments them."""

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, read_image, read_square_truth
from lesionseg.imaging.preprocess import resize_to_square
from lesionseg.imaging.shifts import random_camera_shift


def load_square_arrays(
    records: list[PairRecord], size: int, description: str, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every pair once into uint8 arrays: images N×S×S×3, masks N×S×S (0 or 1)."""
    images = np.empty((len(records), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(records), size, size), dtype=np.uint8)
    for index, record in enumerate(tqdm(records, desc=description, unit="image", disable=not show_progress)):
        images[index] = resize_to_square(read_image(record.image_path), size)
        masks[index] = read_square_truth(record.mask_path, size)
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
    """Square uint8 pairs in memory. Each item comes out augmented and normalised as the model takes it:
    (3×S×S float image, 1×S×S float mask). A DataLoader's workers run the augmentation beside training."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool,
        camera_shifts: bool = False,
        mask_scale: int = 1,
    ) -> None:
        self.images = images
        self.masks = masks
        # 1: masks of 0 and 1; distillation's soft targets are stored on a larger scale (SOFT_TARGET_SCALE).
        # The geometry moves them by nearest neighbour, as it does masks, so a value is always one stored.
        self.mask_scale = mask_scale
        self.augmentation = build_augmentation() if augment else None
        # Another clinic's light, optics and compression (lesionseg.imaging.shifts), before the geometry.
        self.camera_shifts = augment and camera_shifts
        # The serving normaliser's steps (0-1, then per channel), in torch, so a batch never leaves torch.
        self.normalisation = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, square_mask = self.images[index], self.masks[index]
        if self.camera_shifts:
            # Drawn from torch's stream, which each loader worker seeds from the run's, so a resume replays it.
            rgb, square_mask = random_camera_shift(rgb, square_mask, lambda: float(torch.rand(())))
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(square_mask))[None])
        if self.augmentation is not None:
            image, mask = self.augmentation(image, mask)
        target = mask.as_subclass(torch.Tensor).float() / self.mask_scale
        return self.normalisation(image).as_subclass(torch.Tensor), target
