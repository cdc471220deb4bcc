"""Hostile files built byte by byte, as an attacker would: each is small and aims at one weak spot."""

import io
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def canvas_gif(side: int) -> bytes:
    """35 bytes: a 1×1 picture on a side×side logical screen, which the decoder paints whole."""
    screen = b"GIF89a" + struct.pack("<HH", side, side) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    return screen + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def flat_webp(side: int, orientation: int = 1) -> bytes:
    """A few hundred bytes: a lossless side×side WebP of one colour, which libwebp can only decode whole,
    and which EXIF `orientation` may ask to be shown turned (needing it whole once more)."""
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    stream = io.BytesIO()
    Image.new("RGB", (side, side), (180, 140, 120)).save(stream, format="WEBP", lossless=True, exif=exif)
    return stream.getvalue()


def encapsulated_postscript() -> bytes:
    """An EPS file: Pillow's EPS plugin hands these to Ghostscript, an external program."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
        b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n"
    )


def tiff_with_pages(pages: int, side: int = 64) -> bytes:
    """A little-endian TIFF of `pages` grey pages that all share one strip of pixels: about 60 bytes a
    page, so 100,000 pages fit in 6 MB. Counting them page by page is quadratic in Pillow."""
    pixels = bytes(range(256)) * (side * side // 256 + 1)
    pixels = pixels[: side * side]
    strip_offset = 8
    first_ifd = strip_offset + len(pixels)
    entries = [
        (256, 3, 1, side),  # ImageWidth, SHORT
        (257, 3, 1, side),  # ImageLength
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, 1, strip_offset),  # StripOffsets, LONG
        (279, 4, 1, len(pixels)),  # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    parts = [b"II*\x00" + struct.pack("<I", first_ifd), pixels]
    for page in range(pages):
        next_ifd = first_ifd + (page + 1) * ifd_size if page + 1 < pages else 0
        ifd = struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            packed_value = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            ifd += struct.pack("<HHI", tag, kind, count) + packed_value
        parts.append(ifd + struct.pack("<I", next_ifd))
    return b"".join(parts)


def png_with_exif_tags(png: bytes, tags: int) -> bytes:
    """A valid PNG with an eXIf chunk of `tags` entries each claiming more data than the file holds: Pillow warns once
    per tag, each time with a different text."""
    count = min(tags, 0xFFFF)
    entries = b"".join(struct.pack("<HHII", 0x8000 + index % 0x7000, 4, 0x1000_0000, 8) for index in range(count))
    exif = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", count) + entries + struct.pack("<I", 0)
    end = png.rindex(b"IEND") - 4
    return png[:end] + png_chunk(b"eXIf", exif) + png[end:]
