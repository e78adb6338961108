"""TIFF as Pillow misreads it, repaired from the file's own tags (checked against tifffile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, TiffImagePlugin
from PIL.TiffImagePlugin import (
    BITSPERSAMPLE,
    PHOTOMETRIC_INTERPRETATION,
    PLANAR_CONFIGURATION,
    SAMPLEFORMAT,
    SAMPLESPERPIXEL,
)

from btxrd.runtime.decode.tiles import rawmode, with_rawmode
from btxrd.runtime.errors import InputError

# Pillow modes that hold more than 8 bits a sample.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_SEPARATE_PLANES = 2  # PlanarConfiguration
_WHITE_IS_ZERO = 0  # PhotometricInterpretation
_SIGNED = 2  # SampleFormat


@dataclass(frozen=True)
class SampleLayout:
    """What Pillow's own TIFF reading gets wrong, from the tags (checked against tifffile).

    ``view``: the samples' real type where Pillow stores them in a mode of another type (int8 in
    "L", uint32 in the signed "I"); ``invert``: WhiteIsZero deeper than 8 bits, which Pillow leaves
    as stored (it inverts 1- and 8-bit data itself). Compressed signed or float samples are read
    in native byte order, as libtiff returns them (Pillow swaps big-endian ones a second time).
    """

    view: type[np.integer] | None = None
    invert: bool = False

    @classmethod
    def of(cls, opened: Image.Image, path: Path) -> SampleLayout:
        if not isinstance(opened, TiffImagePlugin.TiffImageFile):
            return cls()
        tags = opened.tag_v2
        bits = _first(tags.get(BITSPERSAMPLE), 1)
        sample_format = _first(tags.get(SAMPLEFORMAT), 1)
        if (
            tags.get(PLANAR_CONFIGURATION, 1) == _SEPARATE_PLANES
            and bits > 8
            and _first(tags.get(SAMPLESPERPIXEL), 1) > 1
        ):
            raise InputError(
                f"{path}: {bits}-bit colour TIFF with separate colour planes, which Pillow "
                "misreads; save it with contiguous samples (or as 16-bit grayscale)"
            )
        opened.tile = [
            tile._replace(args=with_rawmode(tile.args, _LIBTIFF_NATIVE[raw]))
            if tile.codec_name == "libtiff" and (raw := rawmode(tile.args)) in _LIBTIFF_NATIVE
            else tile
            for tile in opened.tile
        ]
        view: type[np.integer] | None = None
        if opened.mode == "L" and sample_format == _SIGNED:
            view = np.int8
        elif opened.mode == "I" and bits == 32 and sample_format == 1:
            view = np.uint32
        invert = (
            tags.get(PHOTOMETRIC_INTERPRETATION) == _WHITE_IS_ZERO and opened.mode in DEEP_MODES
        )
        return cls(view, invert)


_LIBTIFF_NATIVE = {
    "I;16S": "I;16NS",
    "I;16BS": "I;16NS",
    "I;32S": "I;32NS",
    "I;32BS": "I;32NS",
    "F;32F": "F;32NF",
    "F;32BF": "F;32NF",
}


def _first(value: Any, default: int) -> int:
    if isinstance(value, tuple):
        value = value[0] if value else default
    return int(value) if isinstance(value, int) else default
