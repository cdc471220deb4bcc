"""A DICOM upload -> the one colour picture it holds, under the limits of any upload, and the header kept.

A hospital sends dermoscopy as DICOM files: VL Photographic, Dermoscopic Photography or Secondary Capture
instances, uncompressed, JPEG baseline, JPEG-LS, JPEG 2000 or RLE. Everything is checked before a pixel is
decoded: the transfer syntax (only those we can decode safely), one frame, three 8-bit colour samples, the
size the header declares (against the pixel limit) and, for a compressed frame, the size its own codestream
declares (a frame that lies about its size would otherwise be decoded at the size it claims). The header,
without its pixels and private elements, stays with the picture: a Segmentation or Parametric Map answer
references it, and the worklist keeps its identifiers. Messages never quote the file's values: a refusal
names what is wrong, never the patient.
"""

import dataclasses
import functools
import io
import itertools
import struct
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MediaStorageDirectoryStorage,
    RLELossless,
)

from lesionseg.imaging.containers import DICOM_PREAMBLE_BYTES, DICOM_PREFIX
from lesionseg.imaging.decode import (
    DecodedImage,
    ImageRejected,
    PhotoBands,
    check_pixel_count,
    decode_bytes,
    log_decoder_error,
    model_view,
    rgb_bands,
)

# After the preamble and prefix, the file meta information, always explicit VR little endian, led by its length.
META_GROUP_LENGTH = struct.Struct("<HH2sHI")  # (0002,0000) UL: group, element, VR, length, value
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
JPEG_FAMILY = {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSLossless, JPEGLSNearLossless}
JPEG_2000_FAMILY = {JPEG2000Lossless, JPEG2000}
READABLE_TRANSFER_SYNTAXES = UNCOMPRESSED | JPEG_FAMILY | JPEG_2000_FAMILY | {RLELossless}
# Why the others are refused, in the user's terms.
LOSSLESS_JPEG_REFUSED = (
    "lossless JPEG (process 14) is not read: its only decoder for Python is GPL-licensed; "
    "send it uncompressed, JPEG-LS or JPEG 2000"
)
REFUSED_TRANSFER_SYNTAXES = {
    JPEGLossless: LOSSLESS_JPEG_REFUSED,
    JPEGLosslessSV1: LOSSLESS_JPEG_REFUSED,
    DeflatedExplicitVRLittleEndian: "deflated DICOM is not read: it inflates without a bound before its size "
    "can be checked; send it uncompressed or with a compressed picture",
}
# The pixel data's tag (7FE0,0010) as little- and big-endian files write it.
PIXEL_DATA_TAG_LITTLE_ENDIAN = b"\xe0\x7f\x10\x00"
PIXEL_DATA_TAG_BIG_ENDIAN = b"\x7f\xe0\x00\x10"
# A photograph's header has a few hundred elements, a modality's private blocks included; far more is a file made
# to cost its reader (each element is parsed, held and, for answers, copied).
MAX_HEADER_ELEMENTS = 4096
# How DICOM names the colour transform a JPEG decoder undoes by default, as it does for a JPEG file.
JPEG_YCBCR_INTERPRETATIONS = {"YBR_FULL_422", "YBR_FULL"}
COLOUR_INTERPRETATIONS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}
# JPEG's start-of-frame markers (SOF0-15 but DHT, JPG and DAC) and JPEG-LS's SOF55: each declares the frame's size.
START_OF_FRAME_MARKERS = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7}
JPEG_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD9)}
# A JPEG 2000 codestream's start (SOC) and size (SIZ) markers, then Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz.
JPEG_2000_START = b"\xff\x4f\xff\x51"
JPEG_2000_SIZE = struct.Struct(">HHIIII")
# How far into a frame the codestream may start: past a JP2 wrapper's signature and header boxes.
JPEG_2000_SEARCH_BYTES = 64 * 1024


@dataclass(frozen=True)
class DicomIdentifiers:
    """What a worklist case keeps of where its picture came from; shown only to those who may read cases."""

    patient_id: str | None
    accession_number: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None

    def as_json(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, header: Dataset) -> "DicomIdentifiers":
        def text(keyword: str) -> str | None:
            value = str(header.get(keyword, "") or "").strip()
            return value[:64] or None  # each is 64 characters at most: longer is damage, cut short

        return cls(
            text("PatientID"),
            text("AccessionNumber"),
            text("StudyInstanceUID"),
            text("SeriesInstanceUID"),
            text("SOPInstanceUID"),
        )


def transfer_syntax(data: bytes) -> str:
    """The file meta information's transfer syntax, read from the meta group alone: pydicom inflates a deflated
    dataset whole as soon as it reads past the meta group, so what it is must be known first."""
    start = DICOM_PREAMBLE_BYTES + len(DICOM_PREFIX)
    try:
        group, element, representation, length, group_length = META_GROUP_LENGTH.unpack_from(data, start)
    except struct.error:
        raise ImageRejected(400, "the DICOM file ends inside its header") from None
    if (group, element, representation, length) != (2, 0, b"UL", 4) or group_length > len(data):
        raise ImageRejected(400, "the DICOM file's meta information is damaged (no group length)")
    end = start + META_GROUP_LENGTH.size + group_length
    try:
        meta = read_dataset(io.BytesIO(data[start:end]), is_implicit_VR=False, is_little_endian=True)
        return str(meta.TransferSyntaxUID)
    except Exception as error:  # pydicom raises many types on a damaged header
        log_decoder_error("dicom meta", error)
        raise ImageRejected(400, "the DICOM file's meta information is damaged or has no transfer syntax") from None


def read_header(data: bytes) -> Dataset:
    """The dataset, its pixel data still encoded; refused unless it holds a picture we can decode."""
    syntax = transfer_syntax(data)
    if syntax in REFUSED_TRANSFER_SYNTAXES:
        raise ImageRejected(415, REFUSED_TRANSFER_SYNTAXES[syntax])
    if syntax not in READABLE_TRANSFER_SYNTAXES:
        raise ImageRejected(415, f"DICOM transfer syntax {syntax[:64]} is not one we read")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises many types on damaged files
        log_decoder_error("dicom header", error)
        raise ImageRejected(400, "the DICOM file is truncated or damaged") from None
    if dataset.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        raise ImageRejected(415, "this is a DICOMDIR, an index of files, not a picture: send one of its pictures")
    elements = sum(1 for _ in itertools.islice(dataset.iterall(), MAX_HEADER_ELEMENTS + 1))
    if elements > MAX_HEADER_ELEMENTS:
        raise ImageRejected(
            413, f"the DICOM header has more than {MAX_HEADER_ELEMENTS} elements; a photograph's has a few hundred"
        )
    return dataset


def check_pixel_data(dataset: Dataset, data: bytes) -> None:
    """The dataset has its pixel data. pydicom stops quietly where a file ends inside an element, keeping what
    came before: a file whose bytes hold the pixel data's tag but whose dataset does not was cut short."""
    if "PixelData" in dataset:
        return
    if PIXEL_DATA_TAG_LITTLE_ENDIAN in data or PIXEL_DATA_TAG_BIG_ENDIAN in data:
        raise ImageRejected(400, "the DICOM file's pixel data is truncated or damaged")
    raise ImageRejected(415, "the DICOM file holds no picture (no pixel data)")


def check_picture(dataset: Dataset, max_pixels: int, min_side: int) -> None:
    """One frame of three 8-bit colour samples, of a size within the limits, as the header declares it."""
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples, bits = int(dataset.SamplesPerPixel), int(dataset.BitsAllocated)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        interpretation = str(dataset.PhotometricInterpretation).strip()
    except Exception:  # missing or malformed attributes
        raise ImageRejected(400, "the DICOM picture's description is incomplete (size, samples or bits)") from None
    if frames != 1:
        raise ImageRejected(415, f"the DICOM file holds {frames} frames: send a single picture")
    if samples != 3 or interpretation not in COLOUR_INTERPRETATIONS:
        raise ImageRejected(
            415, f"the DICOM picture is not in colour ({interpretation[:20] or 'no colour model'}, {samples} samples)"
        )
    if bits != 8:
        raise ImageRejected(415, f"the DICOM picture has {bits} bits a sample; colour photographs have 8")
    check_pixel_count(columns, rows, max_pixels)
    if min(rows, columns) < min_side:
        raise ImageRejected(422, f"the image is {columns}×{rows}; each side must be at least {min_side} pixels")


def jpeg_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(columns, rows) from a JPEG or JPEG-LS frame's start-of-frame marker, walking its marker segments."""
    position = 2 if frame[:2] == b"\xff\xd8" else None
    while position is not None and position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return None
        marker = frame[position + 1]
        if marker in JPEG_STANDALONE_MARKERS or marker == 0xFF:
            position += 1 if marker == 0xFF else 2
            continue
        if marker in START_OF_FRAME_MARKERS and position + 9 <= len(frame):
            rows, columns = struct.unpack_from(">HH", frame, position + 5)
            return columns, rows
        position += 2 + struct.unpack_from(">H", frame, position + 2)[0]
    return None


def codestream_size(frame: bytes, syntax: str) -> tuple[int, int] | None:
    """(columns, rows) as a compressed frame declares them itself; None where it declares none we can read."""
    if syntax in JPEG_FAMILY:
        return jpeg_frame_size(frame)
    if syntax in JPEG_2000_FAMILY:
        return jpeg_2000_frame_size(frame)
    return None


def jpeg_2000_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(columns, rows) from a JPEG 2000 codestream's SIZ marker segment: the image's extent less its offset. The
    codestream starts the frame, or a JP2 wrapper's codestream box (which some writers send) holds it."""
    start = frame.find(JPEG_2000_START, 0, JPEG_2000_SEARCH_BYTES)
    if start < 0 or start + len(JPEG_2000_START) + JPEG_2000_SIZE.size > len(frame):
        return None
    _, _, width, height, left, top = JPEG_2000_SIZE.unpack_from(frame, start + len(JPEG_2000_START))
    return width - left, height - top


def check_frame(dataset: Dataset, syntax: str) -> bytes | None:
    """The pixel data holds the declared frame: uncompressed, all its bytes; compressed, one complete frame whose
    codestream declares the header's size (a decoder would otherwise work at the size the codestream claims).
    Returns the compressed frame; None for an uncompressed one."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if syntax in UNCOMPRESSED:
        if len(dataset.PixelData) < rows * columns * 3:
            raise ImageRejected(400, "the DICOM picture's pixel data is shorter than its declared size: truncated")
        return None
    try:
        frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    except Exception as error:  # pydicom raises many types on a damaged encapsulation
        log_decoder_error("dicom frames", error)
        raise ImageRejected(400, "the DICOM picture's compressed data is truncated or damaged") from None
    if syntax == RLELossless:
        return frame  # RLE declares no size of its own: pydicom decodes each segment into the declared frame only
    declared = codestream_size(frame, syntax)
    if declared is None:
        raise ImageRejected(400, "the DICOM picture's compressed frame has no readable size: truncated or damaged")
    if declared != (columns, rows):
        raise ImageRejected(
            400,
            f"the DICOM picture's compressed frame is {declared[0]}×{declared[1]}, not the {columns}×{rows} "
            "its header declares",
        )
    return frame


def decode_pixels(dataset: Dataset) -> np.ndarray:
    """The frame as H×W×3 RGB (pydicom converts YCbCr)."""
    try:
        rgb = dataset.pixel_array
    except Exception as error:  # the codecs raise many types on damaged data
        log_decoder_error("dicom pixels", error)
        raise ImageRejected(400, "the DICOM picture's data is truncated or corrupt") from None
    if rgb.shape != (int(dataset.Rows), int(dataset.Columns), 3) or rgb.dtype != np.uint8:
        raise ImageRejected(400, "the DICOM picture decoded to another size than its header declares")
    return rgb


def kept_header(dataset: Dataset) -> Dataset:
    """The header without its pixels and private elements: what answers reference, kept small whatever the
    upload carried (10,000 private elements, say)."""
    del dataset.PixelData
    dataset.remove_private_tags()
    return dataset


def decoded_as_jpeg(
    frame: bytes, dataset: Dataset, max_pixels: int, min_side: int, draft_size: int | None, keep_photo: bool
) -> DecodedImage:
    """A JPEG baseline frame in YCbCr is a JPEG file's own bytes, as a camera wrote them: decoded as a JPEG upload
    is (reduced in the decoder where the model needs fewer pixels), so the same picture gives the same mask as
    a DICOM file and as a JPEG file."""
    decoded = decode_bytes(frame, max_pixels, min_side, draft_size, keep_photo)
    if (decoded.original_width, decoded.original_height) != (int(dataset.Columns), int(dataset.Rows)):
        raise ImageRejected(400, "the DICOM picture's JPEG frame decodes to another size than its header declares")
    return dataclasses.replace(decoded, format="DICOM", dicom=kept_header(dataset))


def decode_dicom(
    data: bytes, max_pixels: int, min_side: int, draft_size: int | None = None, keep_photo: bool = False
) -> DecodedImage:
    """A DICOM upload decoded as `imaging.decode.decode_upload` decodes a picture file: the model's (maybe
    reduced) RGB array, the full-size photo where an output shows it, and the header, as `dicom`."""
    dataset = read_header(data)
    check_pixel_data(dataset, data)
    check_picture(dataset, max_pixels, min_side)
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    frame = check_frame(dataset, syntax)
    if syntax == JPEGBaseline8Bit and str(dataset.PhotometricInterpretation).strip() in JPEG_YCBCR_INTERPRETATIONS:
        return decoded_as_jpeg(frame, dataset, max_pixels, min_side, draft_size, keep_photo)
    picture = Image.fromarray(decode_pixels(dataset))
    model_picture, kept = model_view(picture, draft_size, keep_photo)
    photo = PhotoBands(functools.partial(rgb_bands, kept)) if kept is not None else None
    width, height = picture.size
    return DecodedImage(np.asarray(model_picture), width, height, "DICOM", photo, dicom=kept_header(dataset))


def declared_pixels(data: bytes) -> int:
    """The pixel count a DICOM upload's header declares, for the memory budget; 0 where it cannot be read (the
    decoder then says why)."""
    try:
        if transfer_syntax(data) not in READABLE_TRANSFER_SYNTAXES:
            return 0
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(dataset.Rows) * int(dataset.Columns)
    except Exception:  # noqa: BLE001 - any unreadable header is refused, with reasons, by the decoder
        return 0
