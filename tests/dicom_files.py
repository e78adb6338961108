"""DICOM files written by pydicom for tests (the optional [dicom] extra): shared by the DICOM
decoding tests and the reliability matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    syntax=ExplicitVRLittleEndian,
    sop_class=SecondaryCaptureImageStorage,
    **attrs,
) -> Path:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = attrs.pop("PhotometricInterpretation", "MONOCHROME2")
        ds.BitsAllocated = 16
        ds.BitsStored = attrs.pop("BitsStored", 12)
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        data = pixels.astype(np.uint16).tobytes()
        if syntax.is_compressed:
            # Not a real JPEG 2000 stream: decoding must fail before it is ever looked at,
            # because no decoder is installed. Encapsulated as the syntax requires.
            from pydicom.encaps import encapsulate

            data = encapsulate([data])
        ds.PixelData = data
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 64, width: int = 96, top: int = 4095) -> np.ndarray:
    return np.tile(np.linspace(0, top, width), (height, 1)).round().astype(np.uint16)
