"""Training: ISIC-layout datasets, splits, augmentation, losses and the resumable loop."""
