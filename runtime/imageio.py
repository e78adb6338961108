"""Decode an image file into an 8-bit grayscale or RGB Pillow image, the one documented way.

Every image a user has (JPEG, PNG 8/16-bit, palette, RGBA, BMP, TIFF, CMYK) ends up as mode "L"
or "RGB" here, so preprocessing has exactly two cases. Failures raise ``InputError`` naming the
file and the cause; Pillow's own exceptions never escape.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from btxrd.runtime.dicom import is_dicom, load_dicom
from btxrd.runtime.errors import InputError
from btxrd.runtime.settings import DecodeLimits

# Truncated files must fail, never yield partially grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_EXIF_ORIENTATION = 0x0112
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit "L" or "RGB" image, upright, plus what decoding had to do to get there."""

    image: Image.Image
    source_mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def load_image(path: str | Path, limits: DecodeLimits | None = None) -> DecodedImage:
    """Read ``path`` and return it upright as 8-bit "L" or "RGB"."""
    limits = limits or DecodeLimits()
    path = Path(path)
    head = _check_file(path)
    if is_dicom(path, head):
        image, notes = load_dicom(path)
        _check_shape(image.size, path, limits)
        return DecodedImage(image=image, source_mode="DICOM", notes=notes)
    try:
        with Image.open(path) as opened:
            return _decode_opened(opened, path, limits)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception where the host turned warnings into errors.
        raise InputError(f"{path}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(
            f"{path}: not an image file Pillow can read; check the file type"
        ) from None
    except _CORRUPT_DATA_ERRORS as exc:
        raise InputError(
            f"{path}: corrupt or truncated image data ({type(exc).__name__}: {exc})"
        ) from None


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


def decode_pil(
    image: Image.Image, name: str = "<image>", limits: DecodeLimits | None = None
) -> DecodedImage:
    """Normalise an already-open Pillow image (API callers passing images, not paths)."""
    return _decode_opened(image, Path(name), limits or DecodeLimits())


def quiet_decoder_warnings() -> None:
    """Silence Pillow's and pydicom's warnings for the whole process (the CLIs call this).

    Every case they warn about (palette transparency, odd EXIF, DICOM non-conformance, large
    images) is handled or refused here with our own message. ``warnings.catch_warnings`` cannot
    do this per call: it swaps process-global state and is not thread-safe, and decoding runs in
    a thread pool.
    """
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")


def _check_file(path: Path) -> bytes:
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path}: broken symbolic link; fix or remove the link")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; use --dir to classify a folder")
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


def _decode_opened(opened: Image.Image, path: Path, limits: DecodeLimits) -> DecodedImage:
    notes: list[str] = []
    _check_shape(opened.size, path, limits)
    frames = getattr(opened, "n_frames", 1)
    if frames > 1:
        opened.seek(0)
        notes.append(f"multi-frame file: used frame 1 of {frames}")
    source_mode = opened.mode
    opened.load()
    image = opened
    orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(opened)
        notes.append(f"EXIF orientation {orientation} applied")
    return DecodedImage(image=_to_8bit(image, path), source_mode=source_mode, notes=tuple(notes))


def _check_shape(size: tuple[int, int], path: Path, limits: DecodeLimits) -> None:
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


def _to_8bit(image: Image.Image, path: Path) -> Image.Image:
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(scale_to_uint8(np.asarray(image), path))
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


def scale_to_uint8(values: np.ndarray, path: Path | str = "<image>") -> np.ndarray:
    """Map 16-bit or float data onto 0..255 by its real range (never clip like convert("L"))."""
    # NaN or infinity in the file is refused just below; the cast must not warn about it first
    # (np.errstate is per thread and context, safe in the decode pool).
    with np.errstate(invalid="ignore", over="ignore"):
        data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"{path}: expected a single-channel image, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: pixel data contains NaN or infinity; the file is not usable")
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (data - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def _flatten_onto_black(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")
