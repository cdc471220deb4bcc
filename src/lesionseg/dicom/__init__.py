"""DICOM in and out: uploads read (`read`), Segmentation and Parametric Map objects written (`objects`), a
DICOMweb worker (`worker`). Only `is_dicom` lives here, free of pydicom, so that sniffing an upload loads nothing."""

# A Part 10 file: a 128-byte preamble, then "DICM".
PREAMBLE_BYTES = 128
PREFIX = b"DICM"


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble (how every such file begins)."""
    return data[PREAMBLE_BYTES : PREAMBLE_BYTES + len(PREFIX)] == PREFIX
