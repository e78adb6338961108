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


def write_rgb_dicom(path: Path, rgb: np.ndarray, photometric: str = "RGB") -> Path:
    """8-bit colour, stored as ``photometric`` (YBR_FULL is converted with pydicom)."""
    from pydicom.pixels import convert_color_space

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    stored = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", photometric)
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def rewrite(path: Path, **changes) -> Path:
    """Change (value) or delete (None) elements of a written file, keeping everything else."""
    import pydicom

    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    return path
