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
class Identifiers:
    """What identifies an input inside its own format (a DICOM file's UIDs, body part and
    laterality), for the record's ``identifiers``: the format's name and every field that format
    has, each with its text from the file or None where the file has none.

    The one shape for every format: a format whose files carry identifiers only fills this in
    its decoder; the record, its writers and the schema take it as it is.
    """

    format: str
    fields: Mapping[str, str | None]

    def present(self) -> dict[str, str]:
        """The fields the file has."""
        return {key: value for key, value in self.fields.items() if value is not None}

    def to_json(self) -> dict[str, object]:
        return {"format": self.format, "fields": dict(self.fields)}


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit "L" or "RGB" image, upright, plus what decoding had to do to get there."""

    image: Image.Image
    source_mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    # What identifies the source image inside its format; None for formats without any.
    identifiers: Identifiers | None = None
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
