"""JPEG, PNG, TIFF and BMP through Pillow, to an upright 8-bit "L" or "RGB" image.

Pillow is told the allowed formats (``formats=``), so none of its other plugins ever sees the
bytes; what it reads wrong is repaired in ``tiff`` and ``wide``; its exceptions become one
``InputError`` naming the file, except a btxrd bug, which reaches the internal-error path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import (
    ExifTags,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
)

from btxrd.runtime.decode.decoded import EXACT, NOT_JPEG_NOTE, DecodedImage, check_size
from btxrd.runtime.decode.formats import format_names, pillow_formats
from btxrd.runtime.decode.pixels import PillowRows, range_to_uint8
from btxrd.runtime.decode.tiff import DEEP_MODES, SampleLayout
from btxrd.runtime.decode.wide import load_wide, wide_rawmode
from btxrd.runtime.errors import InputError, raised_by_btxrd
from btxrd.runtime.settings import DecodeLimits
from btxrd.runtime.text import cause_of

# Truncated files must fail, never yield partially grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# A valid PNG may carry a large text chunk (a DICOM header or a report pasted into a comment).
# Pillow refuses a compressed one over 1 MB as if the file were corrupt; allow each chunk the
# 64 MB that Pillow already allows all text chunks of a file together.
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY

_EXIF_ORIENTATION = ExifTags.Base.Orientation
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# What Pillow's format plugins raise on malformed files: OSError and SyntaxError from the
# decoders, and plain TypeError, KeyError, IndexError, struct.error or ArithmeticError from header
# parsing (found by tests/fuzz/fuzz_decode.py, e.g. a TIFF whose frame count fails to compute).
_CORRUPT_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    TypeError,
    LookupError,
    struct.error,
    ArithmeticError,
)


def load_pillow(
    path: Path, head: bytes, limits: DecodeLimits, draft: tuple[int, int] | None = None
) -> DecodedImage:
    try:
        # A file object, not the name: Pillow maps a named file into memory, and that path
        # reads TIFF strips with Orientation 5-8 at the turned size (scrambled pixels).
        allowed = tuple(pillow_formats())
        with path.open("rb") as handle, Image.open(handle, formats=allowed) as opened:

            def reopen() -> ImageFile.ImageFile:
                handle.seek(0)
                return Image.open(handle, formats=allowed)

            return decode_opened(opened, path, limits, reopen, draft)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception where the host turned warnings into errors.
        raise InputError(f"{path}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(_unidentified(path, head)) from None
    except NotImplementedError as exc:
        raise InputError(
            f"{path}: uses an image feature Pillow cannot decode ({exc}); convert it to PNG or JPEG"
        ) from None
    except _CORRUPT_DATA_ERRORS as exc:
        if raised_by_btxrd(exc):
            raise  # the internal-error path: "please report it", not "corrupt image"
        raise InputError(
            f"{path}: corrupt or truncated image data ({type(exc).__name__}: {cause_of(exc)})"
        ) from None


def _unidentified(path: Path, head: bytes) -> str:
    """Why no allowed plugin opened the file, naming its real format where Pillow knows it.

    Only the plugins' signature checks (``accept``) look at the bytes; no other plugin parses them.
    """
    Image.init()
    pillow = pillow_formats()
    allowed = [f for f in pillow if _accepts(f, head)]
    if allowed:
        cause = _open_failure(path, allowed[0])
        return (
            f"{path}: a {allowed[0]} file btxrd cannot decode ({cause}); "
            "save it again as 8- or 16-bit grayscale PNG or TIFF"
        )
    known = next((f for f in Image.ID if f not in pillow and _accepts(f, head)), None)
    if known is not None:
        return (
            f"{path}: is {_article(known)} {known} file, not a radiograph format btxrd reads "
            f"({format_names()}); convert it"
        )
    return f"{path}: not an image file btxrd reads ({format_names()}); check the file type"


def _article(name: str) -> str:
    # Format names are read letter by letter ("an EPS", "a DDS"), except the few that are words.
    spoken_vowel = name[0] in "AEFHILMNORSX" and name not in ("FITS", "SPIDER", "SUN")
    return "an" if spoken_vowel else "a"


def _accepts(fmt: str, head: bytes) -> bool:
    accept = Image.OPEN[fmt][1]
    try:
        return bool(accept and accept(head[:16]))
    except (IndexError, ValueError, TypeError, struct.error):
        return False


def _open_failure(path: Path, fmt: str) -> str:
    """The reason the allowed plugin gave up (``Image.open`` keeps only "cannot identify")."""
    try:
        with path.open("rb") as handle:
            Image.OPEN[fmt][0](handle, "").close()
    except _CORRUPT_DATA_ERRORS as exc:
        return cause_of(exc)
    return "unsupported layout"


def decode_opened(
    opened: Image.Image,
    path: Path,
    limits: DecodeLimits,
    reopen: Callable[[], ImageFile.ImageFile] | None,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    notes: list[str] = []
    # The header's full size, before a draft shrinks it: the limits judge the file, not the scale.
    check_size(opened.size, path, limits)
    frames = getattr(opened, "n_frames", 1)
    if frames > 1:
        opened.seek(0)
        notes.append(f"multi-frame file: used frame 1 of {frames}")
    source_mode = opened.mode
    # Both before getexif: a PNG without EXIF loads its pixels to look for it, and the raw mode
    # of 16-bit colour must be read before anything loads.
    layout = SampleLayout.of(opened, path)
    wide = wide_rawmode(opened)
    # Read before loading: Pillow's TIFF plugin turns the image while loading and drops the tag.
    orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    decode = EXACT
    if draft is not None:  # after seek, which would reset the frame's decoder settings
        # The stored pixels of orientations 5-8 are turned a quarter: so is the size they need.
        stored = draft[::-1] if orientation in (5, 6, 7, 8) else draft
        decode = _draft_jpeg(opened, (stored[0], stored[1]), notes)
    if wide is not None:
        if reopen is None:
            raise InputError(
                f"{path}: 16-bit colour image given as an open Pillow image keeps only 8 bits "
                "of each sample; pass the file path instead"
            )
        image = load_wide(opened, reopen, wide, path)
    else:
        opened.load()
        image = opened
    if orientation in _TRANSPOSE:
        if opened.getexif().get(_EXIF_ORIENTATION, 1) == orientation:
            image = image.transpose(_TRANSPOSE[orientation])
        notes.append(f"EXIF orientation {orientation} applied")
    if layout.invert:
        notes.append("TIFF WhiteIsZero inverted")
    return DecodedImage(
        image=_to_8bit(image, path, layout),
        source_mode=source_mode,
        notes=tuple(notes),
        decode=decode,
    )


def _draft_jpeg(opened: Image.Image, size: tuple[int, int], notes: list[str]) -> str:
    """Ask libjpeg to decode at the smallest DCT scale (1/2, 1/4, 1/8) whose size is still at
    least ``size``; return what was done (``EXACT`` or ``jpeg-draft-1/k``).

    Pixels then differ slightly from a full decode + resize, which is why this is opt-in and
    recorded with every result. Must run before the pixels are loaded.
    """
    if not isinstance(opened, JpegImagePlugin.JpegImageFile):
        notes.append(NOT_JPEG_NOTE)
        return EXACT
    width = opened.width
    # mode None: keep the file's own colour handling (a mode would make libjpeg convert).
    drafted = opened.draft(None, size)
    scale = round(width / drafted[1][2]) if drafted is not None else 1
    if scale == 1:
        notes.append("fast decode: too small for a reduced JPEG scale: decoded exactly")
        return EXACT
    return f"jpeg-draft-1/{scale}"


def _to_8bit(image: Image.Image, path: Path, layout: SampleLayout | None = None) -> Image.Image:
    layout = layout or SampleLayout()
    mode = image.mode
    if layout.view is not None or mode in DEEP_MODES:
        eight = range_to_uint8(PillowRows(image, layout.view), path)
        if layout.invert:
            np.subtract(255, eight, out=eight)
        return Image.fromarray(eight)
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_onto_black(image)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise InputError(f"{path}: unsupported image mode {mode!r}; convert it to PNG or JPEG")


def _flatten_onto_black(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")
