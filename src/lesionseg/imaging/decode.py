"""Uploaded bytes -> a validated RGB array, or a rejection that says what is wrong.

Only the decoders in ALLOWED_FORMATS are ever tried, whatever the upload's name or type says: Pillow
has plugins (EPS, for one) that run external programs. Pillow reads only the header before we check the
pixel count, so a decompression bomb is refused before any memory is spent on it. Large JPEGs are
decoded at a reduced scale (Pillow's draft mode) when the model needs far fewer pixels; the original
size is kept for the outputs. Pillow decodes a PNG, TIFF, WebP, or a JPEG at full scale, only whole, at
four bytes a pixel and more (256 MB at 64 megapixels): where such a picture is large, libvips reads it
instead, top to bottom, a band of rows at a time (`StreamedPicture`). Messages are ours: a client never
sees a library's wording or paths.
"""

import functools
import io
import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from lesionseg.imaging.bands import BAND_ROWS
from lesionseg.imaging.containers import is_dicom
from lesionseg.imaging.decoder_warnings import collect_decoder_warnings

if TYPE_CHECKING:
    from pydicom import Dataset

logger = logging.getLogger("lesionseg.imaging")

# Pillow's format names, and how we name them to users. MPO is the JPEG variant some cameras write
# (a primary picture plus previews); Pillow's JPEG decoder opens it, and we use its primary picture.
ALLOWED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")
NOT_AN_IMAGE = "the upload is not an image format we can read (use JPEG, PNG, TIFF, BMP, WebP, a still GIF or DICOM)"
# What a log line keeps of a library's own error message.
MAX_LOGGED_ERROR_CHARACTERS = 200

# EXIF orientations that turn the picture by 90 degrees, swapping width and height.
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
# How each EXIF orientation is undone.
ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION_TAG = 0x0112
# A PNG file: its signature, then chunks of a length, a type, the data and a checksum.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK_HEADER = struct.Struct(">I4s")
PNG_CHUNK_CRC_BYTES = 4


class ImageRejected(ValueError):
    """An upload we will not process; `status_code` is the HTTP status that fits."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def __reduce__(self):
        """Rebuilt with both arguments where it crosses processes (a batch job's encoders): the default would
        pass the message alone."""
        return type(self), (self.status_code, self.message)


# Modes whose conversion to 8 bits depends on the whole picture's range: scaled by its `eight_bit_peak`.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# A picture's RGB bands of a given number of rows, top to bottom: (the rows, the band as an RGB picture).
BandSource = Callable[[int], Iterator[tuple[slice, Image.Image]]]


def rgb_bands(image: Image.Image, rows: int) -> Iterator[tuple[slice, Image.Image]]:
    """The picture as RGB bands of `rows` rows, top to bottom, each converted on its own: the whole picture is
    never converted at once (a high-bit-depth one would be 8 bytes a pixel on the way)."""
    width, height = image.size
    peak = eight_bit_peak(image.mode, lambda: image.getextrema()[1]) if image.mode in HIGH_BIT_DEPTH_MODES else None
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        yield slice(top, bottom), to_rgb(image.crop((0, top, width, bottom)), peak)


# libvips's loader for each format it reads here.
STREAMED_LOADERS = {
    "PNG": "pngload_buffer",
    "JPEG": "jpegload_buffer",
    "TIFF": "tiffload_buffer",
    "WEBP": "webpload_buffer",
}
# Pillow's mode for each libvips pixel format and band count read here; the high-bit-depth ones (grey, in the
# machine's order) are scaled band by band with the whole picture's `eight_bit_peak`.
MODES_BY_LAYOUT = {
    ("uchar", 1): "L",
    ("uchar", 2): "LA",
    ("uchar", 3): "RGB",
    ("uchar", 4): "RGBA",
    ("ushort", 1): "I;16",
    ("int", 1): "I",
    ("float", 1): "F",
}


@functools.cache
def libvips():
    """pyvips, imported on first use and set up for uploads: no operation cache, which would keep each
    upload's bytes and pixels alive after its request; none of the loaders libvips marks untrusted (only
    named loaders are called here: this guards any later code that lets libvips guess)."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.block_untrusted_set(True)
    return pyvips


# How libvips undoes each EXIF orientation: ORIENTATION_TRANSPOSES's turns, bit for bit (tested).
LIBVIPS_TURNS = {
    2: lambda picture: picture.fliphor(),
    3: lambda picture: picture.rot180(),
    4: lambda picture: picture.flipver(),
    5: lambda picture: picture.rot90().fliphor(),
    6: lambda picture: picture.rot90(),
    7: lambda picture: picture.rot270().fliphor(),
    8: lambda picture: picture.rot270(),
}


@dataclass(frozen=True)
class StreamedPicture:
    """An uploaded PNG, JPEG, TIFF or WebP read by libvips with sequential access: each reading decodes the file
    top to bottom once, keeping only the rows a band needs, so the whole picture is never held. Each band is
    made into a Pillow picture of Pillow's own mode for this file and converted by `to_rgb`, as a Pillow
    decode would be: the pixels are the same, bit for bit (tests/imaging/test_decode.py). libwebp decodes a
    WebP only whole, so libvips holds one while its bands are read: about half of what Pillow holds, whose
    only WebP decoder is the animation decoder's, with its canvas beside the frame (978 MB at 64 MP)."""

    data: bytes
    format: str
    mode: str
    size: tuple[int, int]  # as stored, before any turn

    @classmethod
    def of(cls, data: bytes, image: Image.Image) -> "StreamedPicture | None":
        """The upload as libvips reads it, where that is the picture Pillow opened: same size, and the pixel
        layout of Pillow's mode. Otherwise None (a palette, 16-bit colour, CMYK), and Pillow decodes it."""
        if image.format not in STREAMED_LOADERS:
            return None
        candidate = cls(data, image.format, image.mode, image.size)
        picture = candidate.load()  # the header only: sequential reading decodes nothing until asked
        same_size = (picture.width, picture.height) == image.size
        same_layout = MODES_BY_LAYOUT.get((picture.format, picture.bands)) == image.mode
        return candidate if same_size and same_layout else None

    def load(self, access: str = "sequential", **options):
        loader = getattr(libvips().Image, STREAMED_LOADERS[self.format])
        # A random-access reading is decoded into memory, never into a temporary file on disk.
        in_memory = {"memory": True} if access == "random" else {}
        return loader(self.data, access=access, fail_on="error", **in_memory, **options)

    def bands(self, rows: int, orientation: int = 1) -> Iterator[tuple[slice, Image.Image]]:
        """The RGB bands of the picture as stored or, given its EXIF `orientation`, as shown. Each call is a
        new reading: a sequential one goes down the picture only once. A turn needs the whole picture, so a
        turned reading holds it decoded in libvips (217 MB for a 64-megapixel JPEG, measured, where Pillow
        held it and its turned copy: 512 MB)."""
        picture = self.load() if orientation == 1 else LIBVIPS_TURNS[orientation](self.load(access="random"))
        region = libvips().Region.new(picture)
        for top in range(0, picture.height, rows):
            bottom = min(top + rows, picture.height)
            pixels = region.fetch(0, top, picture.width, bottom - top)
            band = Image.frombytes(self.mode, (picture.width, bottom - top), pixels)
            yield slice(top, bottom), to_rgb(band, self.peak)

    @functools.cached_property
    def peak(self) -> float | None:
        """`eight_bit_peak` of the whole picture, for a 32-bit one (a reading of its own: it scales every band);
        65535 for 16 bits; None for 8."""
        if self.mode not in HIGH_BIT_DEPTH_MODES:
            return None
        return eight_bit_peak(self.mode, lambda: self.load().max())

    def reduced(self, factor: int) -> Image.Image:
        """The RGB picture `factor` times smaller a side, for the model: box averages of the bands, bit for bit
        Pillow's `reduce`. A WebP is scaled by libwebp as it decodes instead (averages over areas, within a
        level or two of the boxes), and never held at its full size."""
        if self.format != "WEBP":
            return reduce_in_bands(self.bands, self.size, factor)
        picture = self.load(scale=1 / factor)
        return to_rgb(Image.frombytes(self.mode, (picture.width, picture.height), picture.write_to_memory()))


class PhotoBands:
    """A full-size picture given as RGB bands of BAND_ROWS rows (those of the maps drawn over it), converted or
    decoded a band at a time when drawn: a palette GIF kept in Pillow stays one byte a pixel, a PNG, JPEG or
    TIFF read by libvips is not held at all (unless turned), where RGB would be four bytes a pixel in Pillow
    and three more in NumPy (448 MB at 64 megapixels)."""

    def __init__(self, bands: BandSource) -> None:
        self.bands = bands

    def __iter__(self) -> Iterator[tuple[slice, np.ndarray]]:
        for rows, band in self.bands(BAND_ROWS):
            yield rows, np.asarray(band)


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H×W×3 uint8, possibly reduced in scale: what the model sees
    original_width: int
    original_height: int
    format: str | None = None  # Pillow's name (JPEG, PNG, ...) for decoded bytes; None for arrays
    photo: PhotoBands | None = None  # the full-size picture, kept when `rgb` is reduced and an output shows it
    dicom: "Dataset | None" = None  # a DICOM upload's header, without its pixels (`imaging.dicom.kept_header`)

    def photo_bands(self) -> PhotoBands | np.ndarray:
        """The photo for outputs that show it: the kept full-size picture as RGB bands, or else `rgb`."""
        return self.photo if self.photo is not None else self.rgb


# Alpha premultiplied into the colours: Pillow has them, and converts them only to straight alpha.
PREMULTIPLIED_MODES = {"La": "LA", "RGBa": "RGBA"}


def eight_bit_peak(mode: str, largest_value: Callable[[], float]) -> float:
    """The value a high-bit-depth picture's white has: 65535 for 16-bit modes and for 32-bit ones that go
    above 255 anywhere in the picture, else 255. `largest_value` is asked only for 32-bit modes (Pillow's
    extrema, read without copying the picture; a reading of its own in libvips)."""
    return 65535.0 if mode.startswith("I;16") or largest_value() > 255 else 255.0


def to_rgb(image: Image.Image, peak: float | None = None) -> Image.Image:
    """Any mode to 8-bit RGB; high-bit-depth images are rescaled rather than clipped, by `peak` where the
    picture is a band of a larger one (the whole picture's `eight_bit_peak`)."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        peak = eight_bit_peak(image.mode, lambda: image.getextrema()[1]) if peak is None else peak
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


def decode_upload(
    data: bytes, max_pixels: int, min_side: int, draft_size: int | None = None, keep_photo: bool = False
) -> DecodedImage:
    """`draft_size`: the model needs about this many pixels a side, so a larger picture may be reduced (JPEG
    in its decoder, others by averaging boxes). `keep_photo`: an output will show the photo at its own size,
    so JPEG is decoded whole, and a reduced picture keeps the full-size one as `photo`."""
    if not data:
        raise ImageRejected(400, "the uploaded file is empty")
    with collect_decoder_warnings() as decoder_warnings:
        try:
            decoded = decode_file(data, max_pixels, min_side, draft_size, keep_photo)
        finally:
            if decoder_warnings.count:
                # One bounded line, however many times the decoder complained.
                logger.warning(
                    "the image decoder warned",
                    extra={"fields": {"warnings": decoder_warnings.count, "first": decoder_warnings.messages}},
                )
    return decoded


def decode_file(data: bytes, max_pixels: int, min_side: int, draft_size: int | None, keep_photo: bool) -> DecodedImage:
    """A DICOM file's picture (`imaging.dicom`, imported on first use: a server that never sees one never loads
    pydicom), or a picture file's."""
    if is_dicom(data):
        from lesionseg.imaging.dicom import decode_dicom

        return decode_dicom(data, max_pixels, min_side, draft_size, keep_photo)
    return decode_bytes(data, max_pixels, min_side, draft_size, keep_photo)


def log_decoder_error(stage: str, error: Exception) -> None:
    logger.info(
        "image refused",
        extra={"fields": {"stage": stage, "error": f"{type(error).__name__}: {error}"[:MAX_LOGGED_ERROR_CHARACTERS]}},
    )


def reduce_in_bands(bands: BandSource, size: tuple[int, int], factor: int) -> Image.Image:
    """The picture of `size` shrunk `factor` times by averaging factor×factor boxes (Pillow's `reduce`), a band
    of RGB rows at a time, so the full-size RGB picture is never made. The bands start at multiples of
    `factor`: the result is the whole picture's `reduce`, to the bit. It is written into one array made
    first: the bands' reductions, kept to the end, would sit between the large bands in the heap and keep
    it from reusing them (reducing a 64-megapixel JPEG peaked at 324 MB that way and 199 MB this way)."""
    width, height = size
    reduced = np.empty((-(-height // factor), -(-width // factor), 3), np.uint8)
    for rows, band in bands(factor * max(1, BAND_ROWS // factor)):
        part = np.asarray(band.reduce(factor))
        reduced[rows.start // factor : rows.start // factor + len(part)] = part
    return Image.fromarray(reduced)


def reduction(size: tuple[int, int], draft_size: int | None) -> int:
    """How many times the model's picture is smaller than the original a side: above four times `draft_size`
    a side the model needs far fewer pixels, and the picture is reduced by averaging boxes to between two
    and four times `draft_size`, as JPEG's draft mode does. 1: not reduced."""
    if not draft_size or max(size) <= 4 * draft_size:
        return 1
    return max(size) // (2 * draft_size)


def model_view(image: Image.Image, draft_size: int | None, keep_photo: bool) -> tuple[Image.Image, Image.Image | None]:
    """A loaded picture -> (the RGB picture the model is given, the full-size one kept for drawing, or None).
    A reduced picture is reduced before any conversion, so a huge canvas is never copied at full size."""
    factor = reduction(image.size, draft_size)
    if factor == 1:
        return to_rgb(image), None
    return reduce_in_bands(functools.partial(rgb_bands, image), image.size, factor), image if keep_photo else None


def exif_orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF orientation, 1 where there is none. Pillow finds a PNG's EXIF after the pixel data only by
    decoding the whole picture first; the chunks are walked here instead, and the pixels left undecoded."""
    if image.format != "PNG" or "exif" in image.info:
        return defined_orientation(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    exif = Image.Exif()
    position = len(PNG_SIGNATURE)
    while position + PNG_CHUNK_HEADER.size <= len(data):
        length, kind = PNG_CHUNK_HEADER.unpack_from(data, position)
        if kind == b"eXIf":
            start = position + PNG_CHUNK_HEADER.size
            exif.load(data[start : start + length])
        if kind in (b"eXIf", b"IEND"):
            break
        position += PNG_CHUNK_HEADER.size + length + PNG_CHUNK_CRC_BYTES
    return defined_orientation(exif.get(EXIF_ORIENTATION_TAG, 1))


def defined_orientation(value: object) -> int:
    """EXIF defines orientations 1 to 8; anything else (some cameras write 0, files 9 or 65535 or text) is read
    as 1, upright, as viewers do, on every path: the turn tables hold only 1 to 8."""
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image | None, orientation: int) -> Image.Image | None:
    """The picture turned as its EXIF orientation says (what ImageOps.exif_transpose does, given the
    orientation read before the picture was reduced)."""
    method = ORIENTATION_TRANSPOSES.get(orientation)
    return image.transpose(method) if image is not None and method is not None else image


def streamed_picture(
    data: bytes, image: Image.Image, draft_size: int | None, keep_photo: bool
) -> StreamedPicture | None:
    """libvips's band reader, where it saves what matters: for a picture reduced for the model (a whole decode
    would be thrown away), which Pillow would decode whole: a PNG, a TIFF, a WebP, or a JPEG an output shows
    at its own size (otherwise JPEG's draft mode decodes it small). The model's copy of a picture EXIF turns
    is turned once reduced."""
    if reduction(image.size, draft_size) == 1 or (image.format == "JPEG" and not keep_photo):
        return None
    return StreamedPicture.of(data, image)


def decode_bytes(
    data: bytes, max_pixels: int, min_side: int, draft_size: int | None, keep_photo: bool = False
) -> DecodedImage:
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
            orientation = exif_orientation(image, data)
            streamed = streamed_picture(data, image, draft_size, keep_photo)
            if streamed is not None:
                # The first reading makes the model's picture, and meets any damage here, before inference.
                rgb = np.asarray(upright(streamed.reduced(reduction(image.size, draft_size)), orientation))
                photo = PhotoBands(functools.partial(streamed.bands, orientation=orientation)) if keep_photo else None
            else:
                if draft_size and image.format in ("JPEG", "MPO") and not keep_photo:
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                model_picture, kept = model_view(image, draft_size, keep_photo)
                rgb = np.asarray(upright(model_picture, orientation))
                kept = upright(kept, orientation)
                photo = PhotoBands(functools.partial(rgb_bands, kept)) if kept is not None else None
    except Exception as error:  # Pillow's decoders raise many types on corrupt data
        log_decoder_error("pixels", error)
        raise ImageRejected(400, "the image data is truncated or corrupt") from None
    if several_frames:
        raise ImageRejected(415, "multi-frame images (animations, stacks) are not supported: send one still image")
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return DecodedImage(rgb, width, height, file_format, photo)
