"""The image formats btxrd reads: one registry, from which every list is derived.

The folder walker's suffixes, the "formats btxrd reads" in messages, the formats Pillow may open
(its other plugins never parse an input), the page's file chooser and the parity check's sources
all read ``FORMATS``, at the time they are used. Adding a format Pillow decodes is one line here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

PILLOW = "pillow"
DICOM = "dicom"
DICOM_FORMAT = "DICOM"  # the format's name in messages and in a record's identifiers


@dataclass(frozen=True)
class ImageFormat:
    """One format: its name (for Pillow formats, Pillow's format id), the file suffixes the
    folder walker picks up, which decoder reads it, and the module that decoder needs beyond the
    base install (None: none)."""

    name: str
    suffixes: tuple[str, ...]
    decoder: str = PILLOW
    needs: str | None = None
    # Export's parity images are decoded by Pillow as the reference: a format it does not
    # decode cannot be one.
    parity_source: bool = True


FORMATS: list[ImageFormat] = [
    ImageFormat("JPEG", (".jpg", ".jpeg")),
    ImageFormat("PNG", (".png",)),
    ImageFormat("TIFF", (".tif", ".tiff")),
    ImageFormat("BMP", (".bmp",)),
    ImageFormat(
        DICOM_FORMAT, (".dcm", ".dicom"), decoder=DICOM, needs="pydicom", parity_source=False
    ),
]


def pillow_formats() -> dict[str, tuple[str, ...]]:
    """Pillow's format id -> suffixes: the only plugins Pillow may use on an input."""
    return {f.name: f.suffixes for f in FORMATS if f.decoder == PILLOW}


def image_suffixes(decoder: str | None = None) -> tuple[str, ...]:
    """Every suffix the folder walker picks up (of ``decoder``'s formats only, if given)."""
    return tuple(s for f in FORMATS if decoder in (None, f.decoder) for s in f.suffixes)


def format_names() -> str:
    """The formats for a message: ``JPEG, PNG, TIFF, BMP, DICOM``."""
    return ", ".join(f.name for f in FORMATS)


def installed_formats() -> dict[str, tuple[str, ...]]:
    """The formats this installation reads, with their suffixes: a format whose decoder needs a
    module that is not installed (DICOM without the ``[dicom]`` extra) is left out."""
    return {
        f.name: f.suffixes
        for f in FORMATS
        if f.needs is None or importlib.util.find_spec(f.needs) is not None
    }


def not_parity_sources() -> tuple[str, ...]:
    """Suffixes of formats export's parity check cannot use as a source."""
    return tuple(s for f in FORMATS if not f.parity_source for s in f.suffixes)
