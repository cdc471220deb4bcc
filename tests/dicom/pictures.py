"""Dermoscopic pictures wrapped as DICOM, the way a hospital's camera or PACS would send them, for the tests.

A real photo (from ../shared/data) becomes a VL Photographic, Dermoscopic Photography or Secondary Capture
instance, uncompressed or compressed in any transfer syntax we read. The patient and study are made up, but
distinctive, so a test can look for them where they must never appear (logs).
"""

import io
from datetime import datetime

import numpy as np
from PIL import Image
from pydicom import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# Patient details a test can search for: they must reach the worklist's readers and nothing else.
PATIENT_NAME = "Testpatient^Lesionseg"
PATIENT_ID = "LSG-PATIENT-0427"
ACCESSION_NUMBER = "LSGACC0427"


def base_dataset(rows: int, columns: int, sop_class: str = VL_PHOTOGRAPHIC, study_uid: str | None = None) -> Dataset:
    """A colour picture's attributes but its pixels: patient, study, series, equipment and image modules."""
    now = datetime(2026, 12, 4, 9, 30)
    dataset = Dataset()
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.PatientBirthDate = "19700101"
    dataset.PatientSex = "F"
    dataset.StudyDate = dataset.SeriesDate = dataset.ContentDate = now.strftime("%Y%m%d")
    dataset.StudyTime = dataset.SeriesTime = dataset.ContentTime = now.strftime("%H%M%S")
    dataset.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    dataset.ReferringPhysicianName = ""
    dataset.StudyID = "1"
    dataset.AccessionNumber = ACCESSION_NUMBER
    dataset.Modality = {SECONDARY_CAPTURE: "OT", DERMOSCOPIC_PHOTOGRAPHY: "DMS"}.get(sop_class, "XC")
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = 1
    dataset.Manufacturer = "lesionseg tests"
    dataset.PatientOrientation = ""
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.AcquisitionContextSequence = []
    dataset.BurnedInAnnotation = "NO"
    dataset.Laterality = ""
    if sop_class == SECONDARY_CAPTURE:
        dataset.ConversionType = "DI"
    if sop_class == DERMOSCOPIC_PHOTOGRAPHY:
        # What this IOD adds: the Enhanced General Equipment module (Type 1) and the Dermoscopic Image module
        # (Type 2 but for the features flag: present, empty where the camera does not say).
        dataset.ManufacturerModelName = "lesionseg test camera"
        dataset.DeviceSerialNumber = "0427"
        dataset.SoftwareVersions = "1"
        dataset.RecognizableVisualFeatures = "NO"
        dataset.LightSourcePolarization = dataset.ContactMethod = ""
        dataset.EmitterColorTemperature = dataset.OpticalMagnificationFactor = None
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.LossyImageCompression = "00"
    return dataset


def to_file(dataset: Dataset, transfer_syntax: str) -> bytes:
    """The dataset as a DICOM Part 10 file: preamble, "DICM", file meta information, then the dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wrap_rgb(
    rgb: np.ndarray,
    transfer_syntax: str = ExplicitVRLittleEndian,
    sop_class: str = VL_PHOTOGRAPHIC,
    jpeg_quality: int = 95,
) -> bytes:
    """An H×W×3 uint8 picture as a DICOM file in `transfer_syntax`: uncompressed, JPEG baseline (Pillow),
    JPEG-LS or JPEG 2000 lossless, or RLE (pydicom's encoders)."""
    rows, columns = rgb.shape[:2]
    dataset = base_dataset(rows, columns, sop_class)
    if transfer_syntax == JPEGBaseline8Bit:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "JPEG", quality=jpeg_quality)
        return wrap_jpeg(buffer.getvalue(), sop_class)
    dataset.PhotometricInterpretation = "RGB"
    dataset.PixelData = np.ascontiguousarray(rgb).tobytes()
    if transfer_syntax in (JPEGLSLossless, JPEG2000Lossless, RLELossless):
        dataset.compress(transfer_syntax, rgb)
    return to_file(dataset, transfer_syntax)


def wrap_jpeg(jpeg: bytes, sop_class: str = VL_PHOTOGRAPHIC) -> bytes:
    """A JPEG file's own bytes as the one frame of a JPEG baseline DICOM picture, as cameras store them."""
    with Image.open(io.BytesIO(jpeg)) as picture:
        columns, rows = picture.size
    dataset = base_dataset(rows, columns, sop_class)
    dataset.PhotometricInterpretation = "YBR_FULL_422"
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = f"{rows * columns * 3 / len(jpeg):.2f}"[:16]
    dataset.LossyImageCompressionMethod = "ISO_10918_1"
    dataset.PixelData = encapsulate([jpeg])
    dataset["PixelData"].VR = "OB"
    return to_file(dataset, JPEGBaseline8Bit)
