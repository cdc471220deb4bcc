"""Where an image file ends, and whether it is DICOM. Bytes after a JPEG's end-of-image marker or a PNG's IEND
chunk are not part of the picture: no decoder reads them, but a service that keeps uploads would keep them too (a
client could fill its disk through a tiny picture). Pure byte walking, no decoding."""

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A DICOM Part 10 file: a 128-byte preamble, then "DICM".
DICOM_PREAMBLE_BYTES = 128
DICOM_PREFIX = b"DICM"
# Markers that stand alone, with no length after them: TEM, RST0-7, SOI.
JPEG_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8), 0xD8}


def png_length(data: bytes) -> int | None:
    """The length up to and including the IEND chunk, or None if the chunks do not lead there."""
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        position += 12 + length
        if kind == b"IEND":
            return position if position <= len(data) else None
    return None


def jpeg_length(data: bytes) -> int | None:
    """The length up to and including the first image's EOI marker, or None if the segments do not lead there.
    Segments are stepped over by their lengths (an EXIF thumbnail inside one has an EOI of its own), and the
    entropy-coded data after each SOS up to the next real marker (there, a 0xFF is followed by 0x00 or RSTn)."""
    position = 2
    while position + 1 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        position += 2
        if marker == 0xD9:
            return position
        if marker in JPEG_STANDALONE_MARKERS:
            continue
        if position + 2 > len(data):
            return None
        position += struct.unpack(">H", data[position : position + 2])[0]
        if marker == 0xDA:  # start of scan: skip the entropy-coded data to the next marker
            while True:
                position = data.find(b"\xff", position)
                if position < 0 or position + 1 >= len(data):
                    return None
                following = data[position + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    position += 1 if following == 0xFF else 2
                    continue
                break
    return None


def image_length(data: bytes) -> int:
    """How many leading bytes of `data` hold the image: all of them, unless it is a JPEG or PNG followed by
    anything else."""
    if data.startswith(PNG_SIGNATURE):
        end = png_length(data)
    elif data.startswith(b"\xff\xd8"):
        end = jpeg_length(data)
    else:
        end = None
    return end if end is not None else len(data)


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble (how every such file begins)."""
    return data[DICOM_PREAMBLE_BYTES : DICOM_PREAMBLE_BYTES + len(DICOM_PREFIX)] == DICOM_PREFIX
