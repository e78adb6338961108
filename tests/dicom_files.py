"""DICOM files written by pydicom for tests (the optional [dicom] extra): shared by the DICOM
decoding tests and the reliability matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
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


def lut_item(
    data: np.ndarray, bits: int, first: int = 0, *, vr: str = "US", explanation: str | None = None
) -> Dataset:
    """One item of a VOI (or Modality) LUT Sequence: ``data[i]`` is the output for input
    ``first + i``; LUT Data written as US values or as OW bytes (little endian)."""
    item = Dataset()
    item.add_new(0x00283002, "US", [len(data) % 65536, first, bits])  # LUT Descriptor
    values = np.asarray(data, dtype=np.uint16)
    item.add_new(0x00283006, vr, values.tolist() if vr == "US" else values.astype("<u2").tobytes())
    if explanation is not None:
        item.LUTExplanation = explanation
    return item


def lut_sequence(*items: Dataset) -> Sequence:
    return Sequence(list(items))


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


def write_deflated_zeros(
    path: Path, rows: int, columns: int, *, frames: int = 1, bits: int = 16, **attrs
) -> Path:
    """A deflated DICOM whose pixel data are zeros, streamed through zlib without ever being
    held in memory: 10630 x 10630 16-bit pixels (226 MB) make a file of about 220 KB."""
    import io
    import zlib

    from pydicom.filereader import read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    write_dicom(path, None, syntax=DeflatedExplicitVRLittleEndian)
    with path.open("rb") as handle:  # the meta group stays; the deflated dataset is rebuilt
        read_preamble(handle, False)
        read_dataset(handle, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        start = handle.tell()
        header = zlib.decompress(handle.read(), -zlib.MAX_WBITS)
    extra = Dataset()
    extra.Rows, extra.Columns = rows, columns
    extra.SamplesPerPixel = 1
    extra.PhotometricInterpretation = "MONOCHROME2"
    extra.BitsAllocated = extra.BitsStored = bits
    extra.HighBit = bits - 1
    extra.PixelRepresentation = 0
    if frames > 1:
        extra.NumberOfFrames = frames
    for key, value in attrs.items():
        setattr(extra, key, value)
    buffer = io.BytesIO()
    extra.save_as(buffer, implicit_vr=False, little_endian=True)
    size = rows * columns * frames * bits // 8
    element = (0x7FE0).to_bytes(2, "little") + (0x0010).to_bytes(2, "little") + b"OW\0\0"
    element += size.to_bytes(4, "little")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("r+b") as handle:
        handle.seek(start)
        handle.truncate()
        # Elements must ascend: the file's own (group 0008) first, then the image module.
        handle.write(deflate.compress(header + buffer.getvalue() + element))
        zeros = bytes(1 << 20)
        for offset in range(0, size, len(zeros)):
            handle.write(deflate.compress(zeros[: min(len(zeros), size - offset)]))
        handle.write(deflate.flush())
    return path


def every_12_bit_value() -> np.ndarray:
    """256 x 256 stored values holding each of 0..4095 sixteen times."""
    return (np.arange(256 * 256) % 4096).reshape(256, 256).astype(np.uint16)


def gamma_curve(entries: int, bits: int) -> np.ndarray:
    """A curve no window can make: the square root, over 0..2^bits - 1."""
    top = 2**bits - 1
    return np.round(top * np.sqrt(np.arange(entries) / (entries - 1))).astype(np.uint16)


# The standard's VOI functions onto an output range of 0..255, for the tests to compare with.


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (VOI LUT Function LINEAR, or none)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.where(
        x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 255.0, inside)
    )


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2."""
    x = np.asarray(x, dtype=np.float64)
    inside = ((x - c) / w + 0.5) * 255
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, inside))


def sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1, Equation C.11-1."""
    return 255.0 / (1.0 + np.exp(-4.0 * (np.asarray(x, dtype=np.float64) - c) / w))
