"""One number per image that says how far to trust its mask."""

import numpy as np


def expected_dice_error(mean_probability: np.ndarray, mask: np.ndarray) -> float:
    """1 − soft Dice between the mean probability and the mask made from it.

    If the probabilities are calibrated, this estimates how far the expert's mask would be from
    ours in Dice: 0 when every pixel is certain, larger as the uncertain band around the lesion
    grows relative to the lesion. Images with no lesion and no doubt score 0.
    """
    mask = mask.astype(np.float32)
    overlap = float((mean_probability * mask).sum())
    total = float(mean_probability.sum() + mask.sum())
    if total == 0.0:
        return 0.0
    return 1.0 - 2.0 * overlap / total
