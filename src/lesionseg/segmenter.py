"""The Python API, and the one path from an image to a result that HTTP, the CLI and batch jobs share.

    >>> import lesionseg
    >>> segmenter = lesionseg.load()                     # the embedded model; ONNX Runtime without torch
    >>> result = segmenter.predict("lesion.jpg", seed=0) # a path, bytes, a PIL image or an H×W×3 array
    >>> result.mask.shape == (result.height, result.width)
    True
    >>> result.review_recommended, result.out_of_distribution
    (False, False)
    >>> summary = result.to_json()                       # what POST /predict/?format=json returns
    >>> png = result.render("overlay")                   # what POST /predict/?format=overlay returns
    >>> proposal = segmenter.propose("lesion.jpg")      # LiteMedSAM's mask in the box around the model's
    >>> proposal.mask.shape == result.mask.shape
    True

Files and bytes are decoded exactly as uploads are (the same formats, limits and EXIF rotation). Every
map comes at the image's own size. A `PredictionRequest` is how every caller asks: HTTP, the CLI, batch
jobs and the review worklist build the same one, with its defaults and checks here.
"""

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from lesionseg import cancellation
from lesionseg.config import Settings
from lesionseg.defaults import DEFAULT_SAMPLES, DEFAULT_THRESHOLD, DEFAULT_TTA
from lesionseg.imaging.decode import (
    DecodedImage,
    ImageRejected,
    check_pixel_count,
    decode_upload,
    read_image_file,
    to_rgb,
)
from lesionseg.imaging.regions import bounding_box, outline_polygons, rle_encode
from lesionseg.imaging.render import (
    PANELS_PALETTE,
    HeatmapScale,
    encode_mask_png,
    encode_png_bands,
    heatmap_bands,
    overlay_bands,
    panel_bands,
    probability_bands,
    uncertainty_uint16_bands,
)
from lesionseg.predictor import Prediction, Predictor
from lesionseg.proposals.litemedsam import ENCODER_SIZE, BoxProposer, Proposal, box_around
from lesionseg.uncertainty.coverage import MAX_COVERAGE, MIN_COVERAGE
from lesionseg.uncertainty.sampling import check_samples

ImageInput = str | Path | bytes | Image.Image | np.ndarray
OutputFormat = Literal["png", "mask", "uncertainty", "overlay", "json", "dicom-seg", "dicom-pmap"]
MEDIA_TYPES = {
    "png": "image/png",
    "mask": "image/png",
    "uncertainty": "image/png",
    "overlay": "image/png",
    "json": "application/json",
    "dicom-seg": "application/dicom",
    "dicom-pmap": "application/dicom",
}
DICOM_FORMATS = ("dicom-seg", "dicom-pmap")
NOT_DICOM_SOURCE = (
    "format={format} answers a DICOM upload only: the Segmentation or Parametric Map references its source "
    "picture's patient, study and instance, which a {source} file does not have; send the DICOM file, or ask "
    "for format=mask or format=uncertainty"
)
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class PredictionRequest:
    """How to segment one image. Checked when built, so a bad value is refused before any work, in the
    same words everywhere; `with_defaults` fills what the caller left out from the settings."""

    samples: int = DEFAULT_SAMPLES
    seed: int | None = None  # None: drawn per image, and the result says which
    threshold: float = DEFAULT_THRESHOLD
    coverage: float | None = None  # replaces `threshold` by the checkpoint's conformal threshold
    tta: bool = DEFAULT_TTA  # also sample the image flipped both ways, pooled (3× the trunk's work)

    def __post_init__(self) -> None:
        check_samples(self.samples)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.coverage is not None and not MIN_COVERAGE <= self.coverage <= MAX_COVERAGE:
            raise ValueError(f"coverage must be between {MIN_COVERAGE} and {MAX_COVERAGE}, got {self.coverage}")

    @classmethod
    def with_defaults(
        cls,
        settings: Settings,
        samples: int | None = None,
        seed: int | None = None,
        threshold: float | None = None,
        coverage: float | None = None,
        tta: bool | None = None,
    ) -> "PredictionRequest":
        if coverage is not None and threshold is not None:
            raise ValueError("give either threshold or coverage: coverage chooses the threshold itself")
        return cls(
            samples=settings.default_samples if samples is None else samples,
            seed=seed,
            threshold=settings.default_threshold if threshold is None else threshold,
            coverage=coverage,
            tta=settings.default_tta if tta is None else tta,
        )


@dataclass
class Result:
    """One image's segmentation, its uncertainty and how far to trust it, at the image's own size."""

    decoded: DecodedImage
    prediction: Prediction
    review_threshold: float
    model: dict[str, str]
    settings: Settings  # the heatmap's colour scale

    def __repr__(self) -> str:
        """A summary, never the pixels: a result printed in a notebook or a log stays one line."""
        # At the model's resolution: the full-size mask of a 64-megapixel photo would cost more than the print.
        lesion = float((self.prediction.model_maps.mean_probability[0] >= self.prediction.threshold).mean())
        gate = "unknown" if self.out_of_distribution is None else ("yes" if self.out_of_distribution else "no")
        return (
            f"Result({self.width}×{self.height} px, lesion {lesion:.1%} of the model's view, "
            f"uncertainty score {self.score:.3f} (review at ≥ {self.review_threshold:.3f}: "
            f"{'recommended' if self.review_recommended else 'not flagged'}), not dermoscopy: {gate}, "
            f"{self.prediction.samples} samples, seed {self.prediction.seed}, model {self.model['name']} "
            f"{self.model['version']})"
        )

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

    def to_json(self, include_images: bool = False) -> dict:
        """The summary POST /predict/?format=json returns, as a dict; `include_images` adds the overlay, the
        mask, the heatmap and the mean probability (8-bit, round(255 p), for a threshold moved in the page
        without asking again) as PNG data URLs, and for a DICOM upload the photo itself."""
        body = dict(self._json)
        if include_images:
            body["images"] = {
                name: DATA_URL_PREFIX + base64.b64encode(png).decode("ascii") for name, png in self.pngs()
            }
        return body

    def pngs(self) -> Iterator[tuple[str, bytes]]:
        """The images `include_images` adds, drawn one at a time as they are asked for."""
        yield "overlay", self.render("overlay")
        yield "mask", self.render("mask")
        heatmap = heatmap_bands(self.uncertainty_bands(), self.settings.heatmap_scale_max)
        yield "heatmap", encode_png_bands(heatmap, self.width, self.height)
        probability = probability_bands(self.prediction.bands("mean_probability"))
        yield "probability", encode_png_bands(probability, self.width, self.height)
        if self.decoded.format == "DICOM":
            # A browser cannot show a DICOM file, as it shows a picture file: the page draws the photo from this.
            photo = self.decoded.photo_bands()
            bands = [photo] if isinstance(photo, np.ndarray) else (band for _, band in photo)
            yield "photo", encode_png_bands(bands, self.width, self.height)

    def json_with_images(self) -> bytes:
        """`to_json(include_images=True)` as JSON text, made without its copies: each PNG is base64'd as bytes
        and let go before the next is drawn, and the data URLs, plain ASCII, need no escaping, so the text is
        the summary and the URLs joined once. The dict's way held a photo's overlay PNG (47 MB at 64
        megapixels) as bytes, base64, text, data URL, dumped JSON and its encoding."""
        summary = json.dumps(self._json)
        parts = [summary.removesuffix("}").encode(), b', "images": {']
        for index, (name, png) in enumerate(self.pngs()):
            separator = b", " if index else b""
            parts += [
                separator,
                json.dumps(name).encode(),
                b': "',
                DATA_URL_PREFIX.encode(),
                base64.b64encode(png),
                b'"',
            ]
            del png  # before the next PNG is drawn
        parts.append(b"}}")
        return b"".join(parts)

    @property
    def parameters(self) -> dict[str, str]:
        """How the mask was made, as a DICOM answer's algorithm parameters record it."""
        prediction = self.prediction
        parameters = {"threshold": f"{prediction.threshold:.6g}"}
        if prediction.coverage is not None:
            parameters["coverage"] = f"{prediction.coverage:.6g}"
        return parameters | {"samples": str(prediction.samples), "seed": str(prediction.seed)}

    def dicom_object(self, format: Literal["dicom-seg", "dicom-pmap"], content_description: str | None = None) -> bytes:
        """`dicom-seg`: the mask as a DICOM Segmentation; `dicom-pmap`: the uncertainty as a Parametric Map. Each
        references the uploaded DICOM picture (ImageRejected for any other upload: no patient is invented)."""
        source = self.decoded.dicom
        if source is None:
            raise ImageRejected(422, NOT_DICOM_SOURCE.format(format=format, source=self.decoded.format or "picture"))
        from lesionseg.dicom import objects  # highdicom, on first use: a server that writes none never loads it

        if format == "dicom-seg":
            dataset = objects.segmentation(source, self.mask, self.model, self.parameters, content_description)
        else:
            dataset = objects.parametric_map(source, self.uncertainty, self.model, self.parameters)
        return objects.to_bytes(dataset)

    def uncertainty_bands(self):
        return self.prediction.bands("uncertainty_std")

    def render(self, format: OutputFormat, heatmap: HeatmapScale | None = None, include_images: bool = False) -> bytes:
        """The bytes of an output format (MEDIA_TYPES says its type): `png` the mask and heatmap side by side,
        `mask` 8-bit 0/255, `uncertainty` 16-bit round(std / 0.5 × 65535), `overlay` the photo with the outline
        and uncertainty, `json` the summary, `dicom-seg` and `dicom-pmap` DICOM objects (`dicom_object`).
        `heatmap` overrides the settings' colour scale for `png`. The uncertainty map is drawn a band at a time,
        never held whole at the image's size (but for `dicom-pmap`, whose encoder takes the whole map)."""
        if format == "json":
            return self.json_with_images() if include_images else json.dumps(self._json).encode()
        if format in DICOM_FORMATS:
            return self.dicom_object(format)
        if format == "mask":
            return encode_mask_png(self.mask)
        if format == "uncertainty":
            return encode_png_bands(uncertainty_uint16_bands(self.uncertainty_bands()), self.width, self.height)
        scale_max = self.settings.heatmap_scale_max
        if format == "png":
            bands = panel_bands(self.mask, self.uncertainty_bands(), heatmap or self.settings.heatmap_scale, scale_max)
            return encode_png_bands(bands, 2 * self.width, self.height, palette=PANELS_PALETTE)
        if format == "overlay":
            bands = overlay_bands(self.decoded.photo_bands(), self.mask, self.uncertainty_bands(), scale_max)
            return encode_png_bands(bands, self.width, self.height)
        raise ValueError(f"unknown format {format!r}; use one of {', '.join(MEDIA_TYPES)}")


DATA_URL_PREFIX = "data:image/png;base64,"


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


def decode_image(
    image: ImageInput, settings: Settings, draft_size: int | None, keep_photo: bool = False
) -> DecodedImage:
    """Any accepted input -> a validated RGB array and the image's own size (see `decode_upload` for
    `draft_size` and `keep_photo`)."""
    if isinstance(image, str | Path):
        image = read_image_file(Path(image), settings.max_upload_bytes)
    if isinstance(image, bytes):
        return decode_upload(image, settings.max_pixels, settings.min_side, draft_size, keep_photo)
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
        self, image: ImageInput, request: PredictionRequest | None = None, full_pixels: bool = False, **options
    ) -> Result:
        """`request`, or its fields as keywords (`samples`, `seed`, `threshold`, `coverage`, `tta`), the
        settings' defaults for those left out; `seed` None draws one (the result says which). `full_pixels`
        decodes a large JPEG at full size, for outputs that show the photo."""
        if request is None:
            request = PredictionRequest.with_defaults(self.settings, **options)
        elif options:
            raise TypeError("give a PredictionRequest or its fields as keywords, not both")
        started = time.perf_counter()
        decoded = decode_image(image, self.settings, 2 * self.predictor.input_size, keep_photo=full_pixels)
        decode_ms = round((time.perf_counter() - started) * 1000, 2)
        cancellation.check()
        prediction = self.predictor.predict(
            decoded.rgb,
            samples=request.samples,
            seed=request.seed,
            threshold=request.threshold,
            output_size=(decoded.original_width, decoded.original_height),
            coverage=request.coverage,
            tta=request.tta,
        )
        prediction.timings_ms = {"decode": decode_ms, **prediction.timings_ms}
        cancellation.check()
        review_threshold = self.settings.review_threshold
        if review_threshold is None:
            review_threshold = self.predictor.review_threshold
        return Result(decoded, prediction, review_threshold, self.predictor.identity, self.settings)

    @cached_property
    def proposer(self) -> BoxProposer:
        return BoxProposer()

    def propose(self, image: ImageInput, box: tuple[float, float, float, float] | None = None) -> Proposal:
        """LiteMedSAM's mask for the lesion inside `box` ([x0, y0, x1, y1] in the image's pixels); without a
        box, the box around the model's own mask. A reviewer's starting point, not a prediction: it carries no
        uncertainty. The image's embedding is kept, so a further box on the same image costs only the small
        decoder."""
        if box is None:
            box = box_around(self.predict(image, seed=0).mask)
        decoded = decode_image(image, self.settings, draft_size=2 * ENCODER_SIZE)
        image_size = (decoded.original_height, decoded.original_width)
        return self.proposer.propose(self.proposer.kept_embedding(decoded.rgb, image_size), box)


def load(
    weights: str | Path | None = None,
    backend: str = "auto",
    threads: int = 0,
    settings: Settings | None = None,
    device: str | None = None,
) -> Segmenter:
    """The embedded model, or the checkpoint at `weights` (a .safetensors with its .json sidecar).
    `backend`: "onnx" (ONNX Runtime), "pytorch", ..., or "auto" (PyTorch on a visible GPU, else ONNX Runtime
    where the checkpoint's graphs were exported, else PyTorch). `device`: "auto", "cpu", "cuda" or "cuda:N";
    None reads LESIONSEG_DEVICE (default auto)."""
    settings = settings or Settings()
    weights = Path(weights) if weights else settings.weights
    predictor = Predictor.from_checkpoint(
        weights,
        backend,
        settings.allow_pickle_checkpoints,
        threads,
        site_profile=settings.site_profile,
        device=settings.device if device is None else device,
        cuda_graphs=settings.cuda_graphs,
    )
    return Segmenter(predictor, settings)
