"""Uploaded bytes -> a validated RGB array, or a rejection that says what is wrong.

Only the decoders in ALLOWED_FORMATS are ever tried, whatever the upload's name or type says: Pillow
has plugins (EPS, for one) that run external programs. Pillow reads only the header before we check the
pixel count, so a decompression bomb is refused before any memory is spent on it. Large JPEGs are
decoded at a reduced scale (Pillow's draft mode) when the model needs far fewer pixels; the original
size is kept for the outputs. Messages are ours: a client never sees a library's wording or paths.
"""

import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lesionseg.imaging.decoder_warnings import collect_decoder_warnings

logger = logging.getLogger("lesionseg.imaging")

# Pillow's format names, and how we name them to users. MPO is the JPEG variant some cameras write
# (a primary picture plus previews); Pillow's JPEG decoder opens it, and we use its primary picture.
ALLOWED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")
NOT_AN_IMAGE = "the upload is not an image format we can read (use JPEG, PNG, TIFF, BMP, WebP or a still GIF)"
# What a log line keeps of a library's own error message.
MAX_LOGGED_ERROR_CHARACTERS = 200

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
    format: str | None = None  # Pillow's name (JPEG, PNG, ...) for decoded bytes; None for arrays


# Alpha premultiplied into the colours: Pillow has them, and converts them only to straight alpha.
PREMULTIPLIED_MODES = {"La": "LA", "RGBa": "RGBA"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; high-bit-depth images are rescaled rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(values / peak * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode in PREMULTIPLIED_MODES:
        image = image.convert(PREMULTIPLIED_MODES[image.mode])
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, like paper, rather than whatever colour they hid.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image_file(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, if it is a regular file of at most `max_bytes`: never a device, a FIFO (which would wait for
    a writer for ever) or a file larger than an upload may be. Opened without blocking, then checked, then read
    no further than the limit, so what is read is what was checked."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    status = os.fstat(descriptor)  # on the opened file itself: nothing can be swapped in after the check
    if not stat.S_ISREG(status.st_mode) or status.st_size > max_bytes:
        os.close(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageRejected(415, f"{path} is not a regular file (a folder, device, pipe or socket)")
        raise ImageRejected(413, f"{path} is {status.st_size} bytes; the limit is {max_bytes}")
    with os.fdopen(descriptor, "rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise ImageRejected(413, f"{path} is larger than the limit of {max_bytes} bytes")
    return data


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(413, f"the image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")


def decode_upload(data: bytes, max_pixels: int, min_side: int, draft_size: int | None = None) -> DecodedImage:
    if not data:
        raise ImageRejected(400, "the uploaded file is empty")
    with collect_decoder_warnings() as decoder_warnings:
        try:
            decoded = decode_bytes(data, max_pixels, min_side, draft_size)
        finally:
            if decoder_warnings.count:
                # One bounded line, however many times the decoder complained.
                logger.warning(
                    "the image decoder warned",
                    extra={"fields": {"warnings": decoder_warnings.count, "first": decoder_warnings.messages}},
                )
    return decoded


def log_decoder_error(stage: str, error: Exception) -> None:
    logger.info(
        "image refused",
        extra={"fields": {"stage": stage, "error": f"{type(error).__name__}: {error}"[:MAX_LOGGED_ERROR_CHARACTERS]}},
    )


def decode_bytes(data: bytes, max_pixels: int, min_side: int, draft_size: int | None) -> DecodedImage:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(415, NOT_AN_IMAGE) from None
    except Image.DecompressionBombError:
        raise ImageRejected(413, f"the image has more than {max_pixels} pixels") from None
    except Exception as error:  # Pillow's plugins raise many types on malformed headers
        log_decoder_error("header", error)
        raise ImageRejected(400, "the image header cannot be read: the file is damaged or not what it claims") from None

    width, height = image.size
    file_format = image.format
    check_pixel_count(width, height, max_pixels)
    if min(width, height) < min_side:
        raise ImageRejected(422, f"the image is {width}×{height}; each side must be at least {min_side} pixels")
    try:
        # Whether there is a second frame is known from the header or one seek (never by counting every
        # frame: that is quadratic in a TIFF with 100,000 pages). Reading EXIF and loading touch pixel
        # data, where corruption surfaces.
        several_frames = image.format != "MPO" and getattr(image, "is_animated", False)
        if not several_frames:
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
            if draft_size and image.format in ("JPEG", "MPO"):
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            if draft_size and max(image.size) > 4 * draft_size:
                # Outputs that do not show the photo need only what the model sees: shrink other formats
                # as JPEG's draft mode does, before any conversion, so a huge canvas is never copied.
                image.thumbnail((2 * draft_size, 2 * draft_size), Image.Resampling.BOX)
            image = to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # Pillow's decoders raise many types on corrupt data
        log_decoder_error("pixels", error)
        raise ImageRejected(400, "the image data is truncated or corrupt") from None
    if several_frames:
        raise ImageRejected(415, "multi-frame images (animations, stacks) are not supported: send one still image")
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return DecodedImage(np.asarray(image), width, height, file_format)
