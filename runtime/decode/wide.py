"""16-bit colour, which Pillow reads as 8 bits: the low bytes from a second decode of the file."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from btxrd.runtime.decode.pixels import range_to_uint8
from btxrd.runtime.decode.tiles import rawmode, with_rawmode
from btxrd.runtime.errors import InputError

# Pillow has no 16-bit colour mode: it reads 16-bit RGB(A) and gray+alpha into 8-bit modes and
# keeps each sample's high byte (12-bit data becomes 0..15). A second decode of the same file
# with the unpacker of the other byte gives the low bytes (same bits per pixel, so PNG's row
# filters and TIFF's strips decode the same way).
_OTHER_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_WIDE_RAWMODES = {"RGB;16B", "RGB;16L", "RGB;16N", "RGBA;16B", "RGBA;16L", "RGBA;16N", "LA;16B"}


def wide_rawmode(opened: Image.Image) -> str | None:
    tiles = opened.tile if isinstance(opened, ImageFile.ImageFile) else []
    rawmodes = {rawmode(tile.args) for tile in tiles}
    wide = rawmodes & _WIDE_RAWMODES
    return next(iter(wide)) if len(wide) == 1 and len(rawmodes) == 1 else None


def load_wide(
    opened: Image.Image, reopen: Callable[[], ImageFile.ImageFile], rawmode: str, path: Path
) -> Image.Image:
    # Gray+alpha (PNG "LA;16B", 4 bytes a pixel) is read whole as "RGBA": Lh, Ll, Ah, Al.
    low_rawmode = "RGBA" if rawmode == "LA;16B" else rawmode[:-1] + _OTHER_ORDER[rawmode[-1]]
    opened.load()
    high = np.asarray(opened)
    with reopen() as second:
        if second.size != opened.size and second.size[::-1] != opened.size:
            raise InputError(f"{path}: the file changed while it was read")
        second.tile = [
            tile._replace(args=with_rawmode(tile.args, low_rawmode)) for tile in second.tile
        ]
        second.load()
        low = np.asarray(second)
    if high.shape != low.shape:
        raise InputError(f"{path}: the file changed while it was read")
    alpha: np.ndarray | None
    if rawmode == "LA;16B":
        colour = (low[..., 0].astype(np.uint16) << 8) | low[..., 1]
        alpha = low[..., 2]
    else:
        colour = (high[..., :3].astype(np.uint16) << 8) | low[..., :3]
        alpha = high[..., 3] if high.shape[-1] == 4 else None
    del high, low
    eight = range_to_uint8(colour, path)
    if alpha is None:
        return Image.fromarray(eight)
    if eight.ndim == 2:
        return Image.fromarray(np.dstack([eight, alpha]), mode="LA")
    return Image.fromarray(np.dstack([eight, alpha]), mode="RGBA")
