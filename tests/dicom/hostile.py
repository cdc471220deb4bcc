"""Hostile DICOM files, made here from a valid one: each must get a clear 4xx error and leave nothing held."""

import io

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    MediaStorageDirectoryStorage,
    generate_uid,
)
from tests.dicom.pictures import base_dataset, to_file, wrap_jpeg, wrap_rgb


def picture() -> np.ndarray:
    """A plain colour picture: what it shows does not matter, its packaging does."""
    rows, columns = np.mgrid[0:96, 0:128]
    return np.stack([rows * 2, columns * 2, (rows + columns) % 256], axis=2).astype(np.uint8)


def with_changes(data: bytes, **attributes) -> bytes:
    """A valid file with some attributes changed, written again in its own transfer syntax."""
    dataset = dcmread(io.BytesIO(data))
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return to_file(dataset, dataset.file_meta.TransferSyntaxUID)


def truncated() -> bytes:
    data = wrap_rgb(picture())
    return data[: len(data) // 2]


def huge_declared_frame() -> bytes:
    """60,000 × 60,000 pixels declared (3.6 gigapixels, 10.8 GB decoded), a few bytes sent."""
    dataset = base_dataset(60_000, 60_000)
    dataset.PhotometricInterpretation = "RGB"
    dataset.PixelData = bytes(3 * 1024)
    return to_file(dataset, ExplicitVRLittleEndian)


def preamble_with_no_picture() -> bytes:
    """A valid header, patient and study, but no pixel data."""
    return to_file(base_dataset(96, 128), ExplicitVRLittleEndian)


def encapsulated_stream_cut_short() -> bytes:
    """A JPEG baseline frame of which only the first quarter arrived, its item's length still the whole."""
    data = wrap_jpeg(jpeg_of(picture()))
    dataset = dcmread(io.BytesIO(data))
    whole = bytes(dataset.PixelData)
    return data[: len(data) - len(whole) + len(whole) // 4]


def ten_thousand_private_elements() -> bytes:
    dataset = dcmread(io.BytesIO(wrap_rgb(picture())))
    for block in range(100):
        group = 0x0011 + 2 * block  # odd groups are private
        dataset.private_block(group, f"LESIONSEG TEST {block}", create=True)
        for offset in range(100):
            dataset.add_new((group, 0x1000 + offset), "LO", f"value {offset}")
    return to_file(dataset, ExplicitVRLittleEndian)


def dicomdir() -> bytes:
    """A DICOMDIR: the index of a DICOM CD, listing a patient and no picture of its own."""
    dataset = Dataset()
    dataset.SOPClassUID = MediaStorageDirectoryStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.FileSetID = "LESIONSEG"
    dataset.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    dataset.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    dataset.FileSetConsistencyFlag = 0
    dataset.DirectoryRecordSequence = []
    return to_file(dataset, ExplicitVRLittleEndian)


def several_frames() -> bytes:
    rgb = picture()
    dataset = dcmread(io.BytesIO(wrap_rgb(rgb)))
    dataset.NumberOfFrames = 2
    dataset.PixelData = rgb.tobytes() * 2
    return to_file(dataset, ExplicitVRLittleEndian)


def monochrome() -> bytes:
    grey = picture()[:, :, 0]
    dataset = base_dataset(*grey.shape)
    dataset.SamplesPerPixel = 1
    del dataset.PlanarConfiguration
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = grey.tobytes()
    return to_file(dataset, ExplicitVRLittleEndian)


def sixteen_bits() -> bytes:
    rgb = picture().astype(np.uint16) * 256
    dataset = base_dataset(*rgb.shape[:2])
    dataset.PhotometricInterpretation = "RGB"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelData = rgb.tobytes()
    return to_file(dataset, ExplicitVRLittleEndian)


def lossless_jpeg() -> bytes:
    """Declared as lossless JPEG (process 14), which we do not decode: the frame is never looked at."""
    dataset = dcmread(io.BytesIO(wrap_jpeg(jpeg_of(picture()))))
    return to_file(dataset, JPEGLossless)


def deflated() -> bytes:
    """A deflated dataset: the transfer syntax alone decides (its body need not even be deflated)."""
    return bytes(128) + b"DICM" + meta_group(DeflatedExplicitVRLittleEndian) + bytes(64)


def frame_larger_than_declared() -> bytes:
    """A JPEG frame of 4,000 × 3,000 in a header declaring 128 × 96: decoded, it would be 125 times the size."""
    dataset = dcmread(io.BytesIO(wrap_jpeg(jpeg_of(picture()))))
    big = np.zeros((3000, 4000, 3), np.uint8)
    dataset.PixelData = encapsulate([jpeg_of(big)])
    return to_file(dataset, JPEGBaseline8Bit)


def jpeg_of(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def meta_group(transfer_syntax: str) -> bytes:
    """A file meta group holding only its transfer syntax, with its group length."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    meta = Dataset()
    meta.TransferSyntaxUID = transfer_syntax
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, meta)
    body = buffer.getvalue()
    return b"\x02\x00\x00\x00UL\x04\x00" + len(body).to_bytes(4, "little") + body


# Each hostile file, with the status it must get and a word its message must hold.
HOSTILE_FILES = {
    "truncated": (truncated, 400, "truncated"),
    "huge declared frame": (huge_declared_frame, 413, "limit"),
    "preamble with no picture": (preamble_with_no_picture, 415, "no picture"),
    "encapsulated stream cut short": (encapsulated_stream_cut_short, 400, "truncated"),
    "10,000 private elements": (ten_thousand_private_elements, 413, "elements"),
    "DICOMDIR": (dicomdir, 415, "DICOMDIR"),
    "two frames": (several_frames, 415, "frames"),
    "monochrome": (monochrome, 415, "not in colour"),
    "16 bits a sample": (sixteen_bits, 415, "bits"),
    "lossless JPEG": (lossless_jpeg, 415, "GPL"),
    "deflated": (deflated, 415, "deflated"),
    "a frame larger than declared": (frame_larger_than_declared, 400, "declares"),
}
