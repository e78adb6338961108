"""What every decoder returns (``DecodedImage``), and the size check every decoder makes from the
header before it decodes a pixel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from btxrd.runtime.errors import InputError
from btxrd.runtime.settings import DecodeLimits

EXACT = "exact"  # DecodedImage.decode of every full-resolution decode
NOT_JPEG_NOTE = "fast decode applies to JPEG only: decoded exactly"


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit "L" or "RGB" image, upright, plus what decoding had to do to get there."""

    image: Image.Image
    source_mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    # What identifies the source image (for DICOM: decode.dicom.DICOM_FIELDS, as present).
    source_info: Mapping[str, str] = field(default_factory=dict)
    # How the pixels were decoded: EXACT, or a JPEG decoded at 1/k scale ("jpeg-draft-1/k").
    decode: str = EXACT


def check_size(size: tuple[int, int], path: Path | str, limits: DecodeLimits) -> None:
    """Refuse absurd shapes from the header, before a pixel is decoded."""
    width, height = size
    if width * height > limits.max_pixels:
        raise InputError(
            f"{path}: {width} x {height} pixels exceeds the limit of {limits.max_pixels:,}; "
            "refused before decoding (raise inference.max_pixels if the image is genuine)"
        )
    if min(width, height) < limits.min_side or max(width, height) > limits.max_aspect * min(
        width, height
    ):
        raise InputError(
            f"{path}: {width} x {height} pixels is not a plausible radiograph "
            f"(minimum side {limits.min_side}, maximum aspect ratio {limits.max_aspect:g})"
        )
