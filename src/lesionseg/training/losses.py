"""BCE + soft Dice: BCE for calibrated per-pixel probabilities, Dice for the overlap ISIC scores."""

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    probability = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    intersection = (probability * target).sum(dim=1)
    total = probability.sum(dim=1) + target.sum(dim=1)
    return (1.0 - (2.0 * intersection + smoothing) / (total + smoothing)).mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + dice_weight * soft_dice_loss(logits, target)
