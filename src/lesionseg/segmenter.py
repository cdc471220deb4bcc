"""The Python API, and the one path from an image to a result that HTTP, the CLI and batch jobs share.

    >>> import lesionseg
    >>> segmenter = lesionseg.load()                     # the embedded model; ONNX Runtime without torch
    >>> result = segmenter.predict("lesion.jpg", seed=0) # a path, bytes, a PIL image or an H×W×3 array
    >>> result.mask.shape == (result.height, result.width)
    True
    >>> result.review_recommended, result.out_of_distribution
    (False, False)
    >>> summary = result.to_json()                       # what POST /predict/?format=json returns

Files and bytes are decoded exactly as uploads are (the same formats, limits and EXIF rotation). Every
map comes at the image's own size.
"""

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lesionseg import cancellation
from lesionseg.config import Settings
from lesionseg.imaging.decode import (
    DecodedImage,
    ImageRejected,
    check_pixel_count,
    decode_upload,
    read_image_file,
    to_rgb,
)
from lesionseg.imaging.regions import bounding_box, outline_polygons, rle_encode
from lesionseg.predictor import Prediction, Predictor

ImageInput = str | Path | bytes | Image.Image | np.ndarray


@dataclass
class Result:
    """One image's segmentation, its uncertainty and how far to trust it, at the image's own size."""

    decoded: DecodedImage
    prediction: Prediction
    review_threshold: float
    model: dict[str, str]

    @property
    def width(self) -> int:
        return self.prediction.width

    @property
    def height(self) -> int:
        return self.prediction.height

    @property
    def mask(self) -> np.ndarray:
        """H×W bool: mean probability ≥ threshold (or the coverage's conformal threshold)."""
        return self.prediction.mask

    @property
    def probability(self) -> np.ndarray:
        """H×W float32: the MC mean lesion probability."""
        return self.prediction.mean_probability

    @property
    def uncertainty(self) -> np.ndarray:
        """H×W float32: the standard deviation of the probability over MC samples."""
        return self.prediction.uncertainty_std

    @property
    def score(self) -> float:
        """The expected Dice error: 0 when sure of the whole outline."""
        return self.prediction.uncertainty_score

    @property
    def ood_score(self) -> float | None:
        return self.prediction.ood_score

    @property
    def out_of_distribution(self) -> bool | None:
        """True: probably not dermoscopy; None: the model has no gate to say."""
        return self.prediction.out_of_distribution

    @property
    def review_recommended(self) -> bool:
        return self.prediction.review_recommended(self.review_threshold)

    @cached_property
    def _json(self) -> dict:
        prediction, mask = self.prediction, self.mask
        area = int(np.count_nonzero(mask))
        return {
            "width": self.width,
            "height": self.height,
            "mask_rle": rle_encode(mask),
            "lesion_area_pixels": area,
            "lesion_area_fraction": area / mask.size,
            "bounding_box": bounding_box(mask),
            "outline": outline_polygons(mask),
            "mean_probability_in_lesion": mean_in_mask(prediction.bands("mean_probability"), mask, area),
            "mean_uncertainty_std_in_lesion": mean_in_mask(prediction.bands("uncertainty_std"), mask, area),
            "uncertainty_score": self.score,
            "review_recommended": self.review_recommended,
            "review_threshold": self.review_threshold,
            "ood_score": self.ood_score,
            "out_of_distribution": self.out_of_distribution,
            "coverage": prediction.coverage,
            "model": self.model,
            "samples": prediction.samples,
            "seed": prediction.seed,
            "threshold": prediction.threshold,
            "timings_ms": prediction.timings_ms,
        }

    def to_json(self) -> dict:
        """The summary POST /predict/?format=json returns (without images), as a dict."""
        return dict(self._json)


def mean_in_mask(bands, mask: np.ndarray, area: int) -> float | None:
    """The mean of a full-size map over the mask, summed band by band (the map is never whole)."""
    if not area:
        return None
    # A dot product with the band's mask as 0/1, not `band[mask]`: boolean indexing copies the selected
    # pixels out, and made this 2.2 times as slow at 12 megapixels. Each band's sum is float32 (a million
    # values at most, good to about 1e-6); the bands add up in float64.
    total = 0.0
    for rows, band in bands:
        total += float(np.dot(band.ravel(), mask[rows].ravel().view(np.uint8).astype(np.float32)))
    return total / area


def decode_image(image: ImageInput, settings: Settings, draft_size: int | None) -> DecodedImage:
    """Any accepted input -> a validated RGB array and the image's own size."""
    if isinstance(image, str | Path):
        image = read_image_file(Path(image), settings.max_upload_bytes)
    if isinstance(image, bytes):
        return decode_upload(image, settings.max_pixels, settings.min_side, draft_size)
    if isinstance(image, Image.Image):
        # The same limits as an upload, checked before any pixel is converted.
        check_pixel_count(image.width, image.height, settings.max_pixels)
        image = np.asarray(to_rgb(ImageOps.exif_transpose(image)))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"an image is a path, bytes, a PIL image or a NumPy array, not {type(image).__name__}")
    if image.ndim >= 2:
        check_pixel_count(image.shape[1], image.shape[0], settings.max_pixels)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageRejected(422, f"an array image must be H×W×3 (or H×W) uint8, not {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if min(height, width) < settings.min_side:
        raise ImageRejected(
            422, f"the image is {width}×{height}; each side must be at least {settings.min_side} pixels"
        )
    return DecodedImage(rgb=image, original_width=width, original_height=height)


class Segmenter:
    def __init__(self, predictor: Predictor, settings: Settings | None = None) -> None:
        self.predictor = predictor
        self.settings = settings or Settings()

    def predict(
        self,
        image: ImageInput,
        samples: int | None = None,
        seed: int | None = None,
        threshold: float | None = None,
        coverage: float | None = None,
        tta: bool = False,
        full_pixels: bool = False,
    ) -> Result:
        """`samples` and `threshold` default to the settings'; `seed` None draws one (the result says
        which). `coverage` replaces `threshold` (see `lesionseg calibrate-coverage`); `tta` also samples
        the flipped image. `full_pixels` decodes a large JPEG at full size, for outputs that show it."""
        started = time.perf_counter()
        draft_size = None if full_pixels else 2 * self.predictor.input_size
        decoded = decode_image(image, self.settings, draft_size)
        decode_ms = round((time.perf_counter() - started) * 1000, 2)
        cancellation.check()
        prediction = self.predictor.predict(
            decoded.rgb,
            samples=samples or self.settings.default_samples,
            seed=seed,
            threshold=threshold or self.settings.default_threshold,
            output_size=(decoded.original_width, decoded.original_height),
            coverage=coverage,
            tta=tta,
        )
        prediction.timings_ms = {"decode": decode_ms, **prediction.timings_ms}
        cancellation.check()
        review_threshold = self.settings.review_threshold
        if review_threshold is None:
            review_threshold = self.predictor.review_threshold
        return Result(decoded, prediction, review_threshold, self.predictor.identity)


def load(
    weights: str | Path | None = None, backend: str = "auto", threads: int = 0, settings: Settings | None = None
) -> Segmenter:
    """The embedded model, or the checkpoint at `weights` (a .safetensors with its .json sidecar).
    `backend`: "onnx" (ONNX Runtime), "pytorch", or "auto" (PyTorch where it is installed)."""
    settings = settings or Settings()
    weights = Path(weights) if weights else settings.weights
    predictor = Predictor.from_checkpoint(
        weights, backend, settings.allow_pickle_checkpoints, threads, site_profile=settings.site_profile
    )
    return Segmenter(predictor, settings)
