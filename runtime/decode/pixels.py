"""Deep pixel data to 8 bits, and the blank check, without whole-image float copies.

16-bit, 32-bit and float data (PNG, TIFF, DICOM) are mapped onto 0..255 by their real range (never
clipped, as Pillow's ``convert("L")`` would), computed in float64 a band of rows at a time: float64
temporaries of about a MB instead of 8 bytes a pixel for the whole image (2.9 GB for a 9900 x 9900
PNG). Used by ``btxrd.runtime.decode.image`` and ``btxrd.runtime.decode.dicom``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from btxrd.runtime.errors import InputError

# Blank: below one grey level of spread in every channel, an image shows nothing a reader (or
# the model) could classify. Radiographs are nowhere near it: the synthetic phantoms and the
# shipped samples in models/samples have standard deviations of 30 to 70 grey levels
# (tests/runtime/test_imageio.py::test_real_radiographs_are_far_from_blank measures them).
BLANK_STD = 1.0

# Deep data is mapped to 8 bits in bands of about this many pixels.
_BAND_PIXELS = 1 << 17


def scale_to_uint8(values: np.ndarray, path: Path | str = "<image>") -> np.ndarray:
    """Map 16-bit or float data onto 0..255 by its real range (never clip like convert("L"))."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise InputError(f"{path}: expected a single-channel image, got shape {values.shape}")
    return range_to_uint8(values, path)


class PillowRows:
    """A deep Pillow image read as numpy bands of rows (``crop``), never copied whole."""

    def __init__(self, image: Image.Image, view: type[np.integer] | None) -> None:
        self.image = image
        self.view = view
        self.shape = (image.height, image.width)

    def __getitem__(self, rows: slice) -> np.ndarray:
        band = np.asarray(self.image.crop((0, rows.start, self.image.width, rows.stop)))
        return band.view(self.view) if self.view is not None else band


# What the band helpers read: an array, or a deep Pillow image read band by band.
RowSource = np.ndarray | PillowRows


def row_bands(values: RowSource) -> Iterator[slice]:
    """Slices of rows of about ``_BAND_PIXELS`` pixels each."""
    height = values.shape[0]
    per_row = max(1, int(np.prod(values.shape[1:])))
    step = max(1, _BAND_PIXELS // per_row)
    for start in range(0, height, step):
        yield slice(start, min(height, start + step))


def value_range(values: RowSource, path: Path | str) -> tuple[float, float]:
    """Minimum and maximum, refusing NaN or infinity (min and max carry either through)."""
    low, high = np.inf, -np.inf
    for rows in row_bands(values):
        band = values[rows]
        if band.size:
            low, high = min(low, float(band.min())), max(high, float(band.max()))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{path}: pixel data contains NaN or infinity; the file is not usable")
    return low, high


def map_to_uint8(values: RowSource, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``rint(clip(transform(v), 0, 255))`` as uint8, computed in float64 band by band."""
    out = np.empty(values.shape, dtype=np.uint8)
    for rows in row_bands(values):
        mapped = transform(values[rows].astype(np.float64))
        np.clip(mapped, 0.0, 255.0, out=mapped)
        np.rint(mapped, out=mapped)
        out[rows] = mapped
    return out


def range_to_uint8(values: RowSource, path: Path | str) -> np.ndarray:
    """Map the real min..max onto 0..255; a constant image is refused as blank."""
    low, high = value_range(values, path)
    if high <= low:
        raise InputError(blank_message(path, f"{low:g}"))
    factor = 255.0 / (high - low)
    return map_to_uint8(values, lambda v: (v - low) * factor)


def blank_message(path: Path | str, value: str, detail: str = "") -> str:
    every = f"nearly every pixel is {value}{detail}" if detail else f"every pixel is {value}"
    return f"{path}: the image is blank ({every}); nothing to classify"


def refuse_blank(image: Image.Image, path: Path | str) -> None:
    """Refuse an 8-bit image whose every channel varies by less than ``BLANK_STD`` grey levels.

    Pillow's histogram does the counting, with no whole-image copy; an image that certainly
    varies (``_certainly_varies``) is passed without counting every pixel.
    """
    if _certainly_varies(image):
        return
    counts = _channel_histograms(image)
    std = _channel_std(counts)
    if (std >= BLANK_STD).any():
        return
    commonest = [int(c.argmax()) for c in counts]
    value = str(commonest[0]) if len(commonest) == 1 else str(tuple(commonest))
    constant = all(np.count_nonzero(c) == 1 for c in counts)
    detail = "" if constant else f"; standard deviation {std.max():.2g} grey levels"
    raise InputError(blank_message(path, value, detail))


# The quick check counts this many bands of rows, spread over the image, together an eighth of it.
_QUICK_BANDS = 4
_QUICK_SHARE = 8


def _certainly_varies(image: Image.Image) -> bool:
    """Whether some channel's standard deviation is, provably, at least ``BLANK_STD``, judged from
    a few bands of rows for an eighth of the full histogram's cost; False means "count them
    all", never "blank".

    Exact, not a heuristic: the squared deviations of all N pixels from their mean add up to at
    least those of a subset of n pixels from the subset's own mean, so the image's variance is at
    least n / N times the subset's.
    """
    width, height = image.size
    rows = height // (_QUICK_BANDS * _QUICK_SHARE)
    if rows == 0:
        return False
    tops = [(2 * i + 1) * height // (2 * _QUICK_BANDS) for i in range(_QUICK_BANDS)]
    counts = np.sum(
        [_channel_histograms(image.crop((0, top, width, top + rows))) for top in tops], axis=0
    )
    share = _QUICK_BANDS * rows / height
    return bool((_channel_std(counts) * np.sqrt(share) >= BLANK_STD).any())


def _channel_histograms(image: Image.Image) -> np.ndarray:
    """One row of 256 counts per channel."""
    return np.asarray(image.histogram(), dtype=np.float64).reshape(-1, 256)


def _channel_std(counts: np.ndarray) -> np.ndarray:
    """Each channel's population standard deviation, from its histogram."""
    levels = np.arange(256, dtype=np.float64)
    total = counts.sum(axis=1)
    mean = counts @ levels / total
    return np.sqrt(np.maximum(counts @ levels**2 / total - mean**2, 0.0))
