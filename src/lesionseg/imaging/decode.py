"""Uploaded bytes -> a validated RGB array, or a rejection that says what is wrong.

Pillow reads only the header before we check the pixel count, so a decompression bomb is refused
before any memory is spent on it. Large JPEGs are decoded at a reduced scale (Pillow's draft mode)
when the model needs far fewer pixels; the original size is kept for the outputs.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations that turn the picture by 90 degrees, swapping width and height.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION_TAG = 0x0112


class ImageRejected(ValueError):
    """An upload we will not process; `status_code` is the HTTP status that fits."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H×W×3 uint8, possibly reduced in scale
    original_width: int
    original_height: int
    format: str


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; high-bit-depth images are rescaled rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(values / peak * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, like paper, rather than whatever colour they hid.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_upload(data: bytes, max_pixels: int, min_side: int, draft_size: int | None = None) -> DecodedImage:
    if not data:
        raise ImageRejected(400, "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(
            415, "the upload is not an image format we can read (use JPEG, PNG, TIFF, BMP or WebP)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(413, f"the image has more than {max_pixels} pixels") from None
    except Exception as error:  # Pillow's plugins raise many types on malformed headers
        raise ImageRejected(400, f"the image header cannot be read: {error}") from None

    width, height = image.size
    source_format = image.format or ""
    if width * height > max_pixels:
        raise ImageRejected(413, f"the image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")
    if min(width, height) < min_side:
        raise ImageRejected(422, f"the image is {width}×{height}; each side must be at least {min_side} pixels")
    try:
        # Counting frames, reading EXIF and loading all touch pixel data, where corruption surfaces.
        frame_count = getattr(image, "n_frames", 1)
        if frame_count == 1:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            image = to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow's decoders raise many types on corrupt data
        raise ImageRejected(400, f"the image data is truncated or corrupt: {error}") from None
    if frame_count > 1:
        raise ImageRejected(415, "multi-frame images (animations, stacks) are not supported: send one still image")
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return DecodedImage(rgb=np.asarray(image), original_width=width, original_height=height, format=source_format)
