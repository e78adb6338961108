"""DICOM input through pydicom (the optional ``[dicom]`` extra), turned into an 8-bit image.

Order, as the standard's grayscale pipeline: stored values (already limited to Bits Stored by
pydicom) -> modality LUT (rescale slope/intercept) -> VOI (window centre/width, or a VOI LUT) ->
MONOCHROME1 inverted. Without a window, the real range is used, never a clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from btxrd.runtime.errors import InputError

DICOM_MAGIC_OFFSET = 128


def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM"


def load_dicom(path: Path) -> tuple[Image.Image, tuple[str, ...]]:
    """Read a DICOM file as an 8-bit "L" or "RGB" image, plus notes on what was applied."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise InputError(
            f"{path}: DICOM input needs pydicom; install it with pip install 'btxrd[dicom]'"
        ) from None
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        kind = getattr(ds, "SOPClassUID", None)
        name = getattr(kind, "name", None) or str(kind or "unknown SOP class")
        raise InputError(f"{path}: DICOM object has no image ({name}); give an image object")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        pixels = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"{path}: compressed DICOM ({name}) and no decoder installed; install one with "
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg ("
            f"{str(exc).splitlines()[0][:80]})"
        ) from None
    notes: list[str] = []
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
        notes.append(f"multi-frame DICOM: used frame 1 of {frames}")
    if samples == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        rgb = np.asarray(pixels)
        if rgb.dtype != np.uint8:
            rgb = np.stack([_range_to_uint8(rgb[..., c]) for c in range(3)], axis=-1)
        return Image.fromarray(rgb), tuple(notes)
    values = apply_modality_lut(np.asarray(pixels), ds).astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{path}: DICOM pixel data contains NaN or infinity")
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        gray = _window(values, centre, width)
        notes.append(f"DICOM window centre {centre:g} width {width:g}")
    elif "VOILUTSequence" in ds:
        gray = _range_to_uint8(apply_voi_lut(values, ds).astype(np.float64))
        notes.append("DICOM VOI LUT applied")
    else:
        gray = _range_to_uint8(values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
        notes.append("MONOCHROME1 inverted")
    return Image.fromarray(gray), tuple(notes)


def _first(value: object) -> float:
    # Window values may be multi-valued; the first pair is the default presentation.
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 linear windowing to 0..255."""
    width = max(width, 1.0)
    scaled = ((values - (centre - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _range_to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
