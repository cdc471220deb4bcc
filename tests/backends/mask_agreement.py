"""How far apart two backends' masks are, in the units the model can resolve, not in a share of pixels that
depends on the CPU's instruction set.

The decoder's logits live on a grid of stride 4 at the model's 192 px input, and the mask is their bilinear
upsampling. A lower precision (int8, bfloat16) perturbs logits slightly, so where it flips a logit's sign the
boundary moves by at most about one grid cell, and interpolation spreads that over a second one. An arithmetic
fault (an int8 product that saturates) instead flips pixels far from any boundary. So: every pixel where the
masks differ must lie within two grid cells of the reference mask's boundary."""

import cv2
import numpy as np

DECODER_STRIDE = 4
BOUNDARY_CELLS = 2.0


def farthest_disagreement_in_cells(reference: np.ndarray, found: np.ndarray, input_size: int) -> float:
    """The distance from the reference mask's boundary to the farthest pixel where the masks differ, in cells
    of the decoder's grid (0 when they agree). A cell is measured along the photo's longer side, the coarser
    one of the two after squashing to a square."""
    differ = reference != found
    if not differ.any():
        return 0.0
    boundary = cv2.morphologyEx(reference.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    distance = cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, 5)
    cell_pixels = max(reference.shape) / input_size * DECODER_STRIDE
    return float(distance[differ].max() / cell_pixels)
