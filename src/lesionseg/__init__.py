"""lesionseg: skin-lesion segmentation with per-pixel Monte Carlo Dropout uncertainty."""

__version__ = "0.1.0"
