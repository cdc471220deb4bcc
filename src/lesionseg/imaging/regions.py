"""Machine-readable descriptions of a binary mask: COCO run-length encoding, box, outline."""

import cv2
import numpy as np

# Pixels compared at once when finding runs: a 64-megapixel mask's comparison, whole, would be another 64 MB.
RUN_CHUNK = 1 << 22


def rle_encode(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with a background run.

    Readable by pycocotools (`frPyObjects`) and any COCO tool; `size` is [height, width].
    """
    pixels = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    # Column-major order is the transpose's row order: OpenCV transposes 12 megapixels of uint8 in a few
    # milliseconds, where numpy's Fortran-order copy took 100 or more.
    flat = cv2.transpose(pixels).ravel() if pixels.size else pixels.ravel()
    last = flat.size - 1  # pixel i + 1 starts a run where it differs from pixel i, for i < last
    changes = [
        np.flatnonzero(flat[start + 1 : stop + 1] != flat[start:stop]) + start + 1
        for start in range(0, max(last, 0), RUN_CHUNK)
        for stop in [min(start + RUN_CHUNK, last)]
    ]
    boundaries = np.concatenate([[0], *changes, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_decode(rle: dict) -> np.ndarray:
    height, width = rle["size"]
    values = np.zeros(sum(rle["counts"]), np.uint8)
    position = 0
    for index, count in enumerate(rle["counts"]):
        if index % 2:
            values[position : position + count] = 1
        position += count
    return values.reshape((height, width), order="F").astype(bool)


def bounding_box(mask: np.ndarray) -> list[int] | None:
    """COCO [x, y, width, height] of the lesion pixels, or None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)]


def outline_polygons(mask: np.ndarray, tolerance_pixels: float = 1.0) -> list[list[int]]:
    """Outer outlines as COCO polygons [x1, y1, x2, y2, ...], simplified to within `tolerance_pixels`."""
    # A view, not a copy: findContours leaves its input as it was (OpenCV 3.2 on) and copies what it needs.
    pixels = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    contours, _ = cv2.findContours(pixels, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in sorted(contours, key=cv2.contourArea, reverse=True):
        simplified = cv2.approxPolyDP(contour, tolerance_pixels, closed=True)
        if len(simplified) >= 3:
            polygons.append(simplified.reshape(-1).astype(int).tolist())
    return polygons
