"""Decode an image file into an 8-bit grayscale or RGB Pillow image, the one documented way.

Only the formats radiographs come in are decoded: JPEG, PNG, TIFF and BMP through Pillow (which
is told so with ``formats=``, so none of its other plugins ever sees the bytes) and DICOM through
pydicom (``btxrd.runtime.dicom``). Anything else is refused by its real format. Every image ends
up as mode "L" or "RGB", so preprocessing has exactly two cases; an image with no content (every
pixel the same) is refused. Sizes are checked from the header before any pixel is decoded, and
deep (16-bit, 32-bit, float) data is scaled in bands of rows, so memory stays near the size of the
decoded image. Failures raise ``InputError`` naming the file, the cause and the fix; Pillow's and
pydicom's own exceptions never escape.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import struct
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
)

from btxrd.runtime.errors import InputError
from btxrd.runtime.formats import DICOM, format_names, image_suffixes, pillow_formats
from btxrd.runtime.pixels import (
    BLANK_STD,
    PillowRows,
    range_to_uint8,
    refuse_blank,
    scale_to_uint8,
)
from btxrd.runtime.settings import DecodeLimits
from btxrd.runtime.text import cause_of

__all__ = [
    "BLANK_STD",
    "EXACT",
    "DecodeLimits",
    "DecodedImage",
    "load_image",
    "scale_to_uint8",
]

# Truncated files must fail, never yield partially grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# A valid PNG may carry a large text chunk (a DICOM header or a report pasted into a comment).
# Pillow refuses a compressed one over 1 MB as if the file were corrupt; allow each chunk the
# 64 MB that Pillow already allows all text chunks of a file together.
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
EXACT = "exact"  # DecodedImage.decode of every full-resolution decode
NOT_JPEG_NOTE = "fast decode applies to JPEG only: decoded exactly"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit "L" or "RGB" image, upright, plus what decoding had to do to get there."""

    image: Image.Image
    source_mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    # What identifies the source image (for DICOM: btxrd.runtime.dicom.DICOM_FIELDS, as present).
    source_info: Mapping[str, str] = field(default_factory=dict)
    # How the pixels were decoded: EXACT, or a JPEG decoded at 1/k scale ("jpeg-draft-1/k").
    decode: str = EXACT


def load_image(
    path: str | Path, limits: DecodeLimits | None = None, draft: tuple[int, int] | None = None
) -> DecodedImage:
    """Read ``path`` and return it upright as 8-bit "L" or "RGB".

    ``draft`` (width, height): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale in the DCT domain,
    the smallest scale still at least this size (``--fast-decode``); other formats decode exactly.
    Size limits apply to the full size in the header either way.
    """
    limits = limits or DecodeLimits()
    path = Path(path)
    head = _check_file(path)
    if is_dicom(path, head):
        from btxrd.runtime.dicom import load_dicom  # pydicom only when a DICOM file is met

        image, notes, identifiers = load_dicom(path, limits)
        if draft is not None:
            notes = (*notes, NOT_JPEG_NOTE)
        decoded = DecodedImage(
            image=image, source_mode="DICOM", notes=notes, source_info=identifiers
        )
    else:
        decoded = _load_pillow(path, head, limits, draft)
    refuse_blank(decoded.image, path)
    return decoded


def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in image_suffixes(DICOM) or head[128:132] == b"DICM"


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


def _load_pillow(
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

            return _decode_opened(opened, path, limits, reopen, draft)
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
        if _a_btxrd_bug(exc):
            raise  # the internal-error path: "please report it", not "corrupt image"
        raise InputError(
            f"{path}: corrupt or truncated image data ({type(exc).__name__}: {cause_of(exc)})"
        ) from None


# The runtime package's own folder (the decode path's code lives there, installed or not; the
# folder above may hold a virtual environment with Pillow in it).
_BTXRD_CODE = str(Path(__file__).resolve().parent) + os.sep


def _a_btxrd_bug(exc: BaseException) -> bool:
    """A programming error (TypeError) raised in btxrd's own code, not in a decoder: a damaged
    file makes Pillow's plugins raise TypeError too, and that one is the file's fault."""
    if not isinstance(exc, TypeError):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.startswith(_BTXRD_CODE)


def decode_pil(
    image: Image.Image,
    name: str = "<image>",
    limits: DecodeLimits | None = None,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Normalise an already-open Pillow image (API callers passing images, not paths); ``draft``
    as for ``load_image`` (it applies only to a JPEG whose pixels are not loaded yet)."""
    decoded = _decode_opened(image, Path(name), limits or DecodeLimits(), None, draft)
    refuse_blank(decoded.image, name)
    return decoded


def quiet_decoder_warnings() -> None:
    """Silence Pillow's, pydicom's and libtiff's warnings for the whole process (the CLIs call
    this).

    Every case they warn about (palette transparency, odd EXIF, DICOM non-conformance, large
    images, libtiff's complaints about tags or damaged strips) is handled or refused here with our
    own message. ``warnings.catch_warnings`` or redirecting file descriptor 2 cannot do this per
    call: both swap process-global state and are not thread-safe, and decoding runs in a thread
    pool.
    """
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    # Pillow logs some refusals (a TIFF's absurd sample count) before it raises; with no handler
    # of its own, Python's last-resort handler would print them on stderr.
    logging.getLogger("PIL").addHandler(logging.NullHandler())
    _silence_libtiff()


def _silence_libtiff() -> None:
    """libtiff prints its warnings and errors to stderr itself; Pillow still raises on the errors.

    Its handlers are process-wide settings of the library Pillow loaded, so they are set once
    there. Where that library cannot be found (another platform's layout), nothing changes.
    """
    for library in _loaded_libtiff():
        try:
            libtiff = ctypes.CDLL(library, mode=getattr(os, "RTLD_NOLOAD", 0))
            for setter in (libtiff.TIFFSetWarningHandler, libtiff.TIFFSetErrorHandler):
                setter.argtypes = [ctypes.c_void_p]
                setter.restype = ctypes.c_void_p
                setter(None)
        except (OSError, AttributeError):
            continue


def _loaded_libtiff() -> list[str]:
    from PIL import _imaging  # noqa: F401  (loads the libtiff Pillow was built with)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line and "/" in line}
    except OSError:
        return []
    return sorted(paths)


def _check_file(path: Path) -> bytes:
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: broken symbolic link; fix or remove the link")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; use --dir to classify a folder")
    # Only regular files are opened: reading a FIFO (or a device) would wait for a writer for
    # ever, in a decode thread that Ctrl-C cannot stop.
    if not stat.S_ISREG(path.stat().st_mode):
        raise InputError(f"{path}: not a regular file (a FIFO, socket or device); not read")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except PermissionError:
        raise InputError(f"{path}: permission denied; make the file readable") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if not head:
        raise InputError(f"{path}: empty file (0 bytes)")
    if head.startswith(LFS_POINTER_PREFIX):
        raise InputError(f"{path}: is a git-LFS pointer, not the image; run `git lfs pull`")
    return head


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


def _decode_opened(
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
    layout = _SampleLayout.of(opened, path)
    wide = _wide_rawmode(opened)
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
        image = _load_wide(opened, reopen, wide, path)
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


@dataclass(frozen=True)
class _SampleLayout:
    """What Pillow's own TIFF reading gets wrong, from the tags (checked against tifffile).

    ``view``: the samples' real type where Pillow stores them in a mode of another type (int8 in
    "L", uint32 in the signed "I"); ``invert``: WhiteIsZero deeper than 8 bits, which Pillow leaves
    as stored (it inverts 1- and 8-bit data itself). Compressed signed or float samples are read
    in native byte order, as libtiff returns them (Pillow swaps big-endian ones a second time).
    """

    view: type[np.integer] | None = None
    invert: bool = False

    @classmethod
    def of(cls, opened: Image.Image, path: Path) -> _SampleLayout:
        if not isinstance(opened, TiffImagePlugin.TiffImageFile):
            return cls()
        tags = opened.tag_v2
        bits = _first(tags.get(258), 1)
        sample_format = _first(tags.get(339), 1)
        if tags.get(284, 1) == 2 and bits > 8 and _first(tags.get(277), 1) > 1:
            raise InputError(
                f"{path}: {bits}-bit colour TIFF with separate colour planes, which Pillow "
                "misreads; save it with contiguous samples (or as 16-bit grayscale)"
            )
        opened.tile = [
            tile._replace(args=_with_rawmode(tile.args, _LIBTIFF_NATIVE[raw]))
            if tile.codec_name == "libtiff" and (raw := _rawmode(tile.args)) in _LIBTIFF_NATIVE
            else tile
            for tile in opened.tile
        ]
        view: type[np.integer] | None = None
        if opened.mode == "L" and sample_format == 2:
            view = np.int8
        elif opened.mode == "I" and bits == 32 and sample_format == 1:
            view = np.uint32
        invert = tags.get(262) == 0 and opened.mode in _DEEP_MODES
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


# Pillow has no 16-bit colour mode: it reads 16-bit RGB(A) and gray+alpha into 8-bit modes and
# keeps each sample's high byte (12-bit data becomes 0..15). A second decode of the same file
# with the unpacker of the other byte gives the low bytes (same bits per pixel, so PNG's row
# filters and TIFF's strips decode the same way).
_OTHER_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_WIDE_RAWMODES = {"RGB;16B", "RGB;16L", "RGB;16N", "RGBA;16B", "RGBA;16L", "RGBA;16N", "LA;16B"}


def _rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _wide_rawmode(opened: Image.Image) -> str | None:
    tiles = opened.tile if isinstance(opened, ImageFile.ImageFile) else []
    rawmodes = {_rawmode(tile.args) for tile in tiles}
    wide = rawmodes & _WIDE_RAWMODES
    return next(iter(wide)) if len(wide) == 1 and len(rawmodes) == 1 else None


def _load_wide(
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
            tile._replace(args=_with_rawmode(tile.args, low_rawmode)) for tile in second.tile
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


def _with_rawmode(args: tuple[Any, ...] | str | None, rawmode: str) -> tuple[Any, ...] | str:
    return rawmode if isinstance(args, str) or not args else (rawmode, *args[1:])


def _to_8bit(image: Image.Image, path: Path, layout: _SampleLayout | None = None) -> Image.Image:
    layout = layout or _SampleLayout()
    mode = image.mode
    if layout.view is not None or mode in _DEEP_MODES:
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
