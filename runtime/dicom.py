"""DICOM input through pydicom (the optional ``[dicom]`` extra), turned into an 8-bit image.

Order, as the standard's grayscale pipeline: stored values (already limited to Bits Stored by
pydicom) -> modality LUT (rescale slope/intercept) -> VOI (window centre/width, or a VOI LUT) ->
MONOCHROME1 inverted. Without a usable window, the real range is used, never a clip.

Nothing is decoded before the header has been checked against the decode limits: the header is
read with the pixel data deferred (for the deflated syntax, inflated no further than the header),
then only the first frame is decoded. Rescale and window are applied in bands of rows, so no
float64 copy of the whole image is made.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from btxrd.runtime.errors import InputError
from btxrd.runtime.imageio import check_size
from btxrd.runtime.pixels import blank_message, map_to_uint8, value_range
from btxrd.runtime.settings import DecodeLimits

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# Values longer than this stay in the file until used (pixel data, embedded documents).
_DEFER_BYTES = 64 * 1024
# A deflated dataset is inflated in steps until the pixel data element is reached; a header
# larger than this before the pixels is refused (real headers are a few KB to a few hundred).
_MAX_HEADER_BYTES = 16 * 1024 * 1024
# What may follow the pixel data in a deflated dataset (padding, trailing elements).
_TRAILER_BYTES = 1024 * 1024
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float
_PHOTOMETRIC = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
)
_INSTALL = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
# What pydicom (and zlib, for the deflated syntax) raise on malformed datasets and pixel data.
_DICOM_ERRORS = (
    zlib.error,
    struct.error,
    ValueError,
    TypeError,
    AttributeError,
    LookupError,
    RuntimeError,
    OSError,
    EOFError,
    ArithmeticError,
)


def load_dicom(
    path: Path, limits: DecodeLimits | None = None
) -> tuple[Image.Image, tuple[str, ...]]:
    """Read a DICOM file as an 8-bit "L" or "RGB" image, plus notes on what was applied."""
    limits = limits or DecodeLimits()
    try:
        import pydicom
        from pydicom.errors import BytesLengthException, InvalidDicomError
    except ImportError:
        raise InputError(
            f"{path}: DICOM input needs pydicom; install it with pip install 'btxrd[dicom]'"
        ) from None
    errors = (InvalidDicomError, BytesLengthException, *_DICOM_ERRORS)
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        syntax = meta.get("TransferSyntaxUID")
    except errors as exc:
        raise InputError(f"{path}: not a readable DICOM file ({_first_line(exc)})") from None
    # pydicom converts each element when it is first used, so a malformed value raises wherever
    # it is read: the whole reading is fenced, with narrower messages raised inside.
    try:
        if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            ds = _read_deflated(path, meta, limits)
        else:
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
            _check_header(ds, path, limits, inflated=False)
        pixels = _first_frame(ds, path, syntax, errors)
        return _to_image(ds, pixels, path)
    except InputError:
        raise
    except errors as exc:
        raise InputError(f"{path}: malformed DICOM data ({_first_line(exc)})") from None


def _read_deflated(path: Path, meta: Any, limits: DecodeLimits) -> Dataset:
    """Inflate the dataset no further than its header says it needs.

    pydicom inflates a deflated file whole before it reads a tag: a 219 KB file can hold
    gigabytes of zeros. Here the header is inflated first and checked; the pixel data is then
    inflated only up to the size that header declares.
    """
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset, read_preamble

    with path.open("rb") as handle:
        preamble = read_preamble(handle, False)
        read_dataset(handle, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        pending = handle.read()
    chunks: list[bytes] = []
    inflated = 0

    def inflate(limit: int) -> None:
        nonlocal pending, inflated
        while inflated < limit and not inflater.eof and (pending or inflater.unconsumed_tail):
            chunk = inflater.decompress(pending or inflater.unconsumed_tail, limit - inflated)
            pending = b""
            if not chunk and not inflater.unconsumed_tail:
                break
            chunks.append(chunk)
            inflated += len(chunk)

    def complete() -> bool:
        return inflater.eof or not (pending or inflater.unconsumed_tail)

    step = 64 * 1024
    while True:
        inflate(step)
        reached: list[bool] = []

        def at_pixels(tag: Any, vr: Any, length: int, seen: list[bool] = reached) -> bool:
            seen.append(int(tag) in _PIXEL_TAGS)
            return seen[-1]

        header = read_dataset(io.BytesIO(b"".join(chunks)), False, True, stop_when=at_pixels)
        if reached and reached[-1]:
            break
        if complete():
            break
        if step >= _MAX_HEADER_BYTES:
            raise InputError(
                f"{path}: deflated DICOM whose header exceeds {_MAX_HEADER_BYTES // 2**20} MB "
                "before the pixel data; refused before decoding"
            )
        step *= 4
    pixel_bytes = _check_header(header, path, limits, inflated=True)
    inflate(inflated + pixel_bytes + _TRAILER_BYTES)
    data = b"".join(chunks)
    chunks.clear()
    dataset = read_dataset(io.BytesIO(data), False, True)
    del data
    return FileDataset(str(path), dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False)


def _check_header(ds: Dataset, path: Path, limits: DecodeLimits, *, inflated: bool) -> int:
    """Check the image pixel module against the limits; return the pixel data's size in bytes."""
    if "Rows" not in ds and not any(tag in ds for tag in _PIXEL_TAGS):
        kind = getattr(ds, "SOPClassUID", None)
        name = getattr(kind, "name", None) or str(kind or "unknown SOP class")
        raise InputError(f"{path}: DICOM object has no image ({name}); give an image object")
    rows, columns = _header_int(ds, "Rows", path), _header_int(ds, "Columns", path)
    bits = _header_int(ds, "BitsAllocated", path)
    samples = _header_int(ds, "SamplesPerPixel", path, default=1)
    frames = _header_int(ds, "NumberOfFrames", path, default=1) or 1
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in _PHOTOMETRIC:
        raise InputError(
            f"{path}: DICOM photometric interpretation {photometric!r} is not one btxrd reads "
            f"({', '.join(_PHOTOMETRIC)})"
        )
    if samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
        raise InputError(
            f"{path}: malformed DICOM header ({samples} samples per pixel of {bits} bits "
            "allocated; expected 1 or 3 samples of 1, 8, 16, 32 or 64 bits)"
        )
    check_size((columns, rows), path, limits)
    if inflated and rows * columns * frames > limits.max_pixels:
        raise InputError(
            f"{path}: deflated DICOM of {columns} x {rows} pixels x {frames} frames exceeds the "
            f"limit of {limits.max_pixels:,} pixels (every frame must be inflated); refused "
            "before decoding"
        )
    return math.ceil(rows * columns * frames * samples * bits / 8)


def _header_int(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise InputError(f"{path}: malformed DICOM header ({keyword} is missing)")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: malformed DICOM header ({keyword} is {value!r})") from None


def _first_frame(ds: Dataset, path: Path, syntax: Any, errors: tuple) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(ds, index=0)
    except errors as exc:
        cause = _first_line(exc)
        if syntax is None or not getattr(syntax, "is_compressed", False):
            raise InputError(f"{path}: malformed DICOM pixel data ({cause})") from None
        name = getattr(syntax, "name", str(syntax))
        if "missing dependencies" in str(exc):
            raise InputError(
                f"{path}: compressed DICOM ({name}) and no decoder installed; install one with "
                f"{_INSTALL}"
            ) from None
        raise InputError(
            f"{path}: compressed DICOM ({name}) could not be decoded ({cause}); if the file is "
            f"intact, install a fuller decoder with {_INSTALL}"
        ) from None


def _to_image(ds: Dataset, pixels: np.ndarray, path: Path) -> tuple[Image.Image, tuple[str, ...]]:
    notes: list[str] = []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    rows, columns = int(ds.Rows), int(ds.Columns)
    if frames > 1:
        notes.append(f"multi-frame DICOM: used frame 1 of {frames}")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            pixels = apply_color_lut(pixels, ds)
        except _DICOM_ERRORS as exc:
            raise InputError(f"{path}: malformed DICOM palette ({_first_line(exc)})") from None
    colour = pixels.ndim == 3
    if pixels.shape[:2] != (rows, columns) or (colour and pixels.shape[2] != 3):
        raise InputError(
            f"{path}: malformed DICOM pixel data (decoded shape {pixels.shape}, header says "
            f"{rows} x {columns})"
        )
    if colour:
        # pydicom returns YBR data as RGB already (pixel_array's default).
        if pixels.dtype != np.uint8:
            low, high = value_range(pixels, path)
            pixels = map_to_uint8(pixels, _linear(low, high, path))
        return Image.fromarray(pixels), tuple(notes)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8)
    stored, rescale, modality = _modality(ds, pixels, path)
    window = _window(ds, rescale, path, notes)
    if window is not None:
        gray = map_to_uint8(stored, window)
    elif "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        try:
            values = apply_voi_lut(modality(), ds)
        except _DICOM_ERRORS as exc:
            raise InputError(f"{path}: malformed DICOM VOI LUT ({_first_line(exc)})") from None
        low, high = value_range(values, path)
        gray = map_to_uint8(values, _linear(low, high, path))
        notes.append("DICOM VOI LUT applied")
    else:
        low, high = value_range(stored, path)
        ends = sorted((rescale(np.float64(low)), rescale(np.float64(high))))
        linear = _linear(float(ends[0]), float(ends[1]), path)
        gray = map_to_uint8(stored, lambda v: linear(rescale(v)))
    if photometric == "MONOCHROME1":
        np.subtract(255, gray, out=gray)
        notes.append("MONOCHROME1 inverted")
    return Image.fromarray(gray), tuple(notes)


def _modality(ds: Dataset, pixels: np.ndarray, path: Path) -> tuple[np.ndarray, Any, Any]:
    """The stored values, the rescale as a function of them, and the full modality LUT output.

    A linear rescale is applied band by band (``rescale``); a Modality LUT Sequence, which is
    rare, goes through pydicom on the whole frame.
    """
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        try:
            values = apply_modality_lut(pixels, ds)
        except _DICOM_ERRORS as exc:
            raise InputError(f"{path}: malformed DICOM modality LUT ({_first_line(exc)})") from None
        return values, lambda v: v, lambda: values
    slope = _number(ds, "RescaleSlope", 1.0, path)
    intercept = _number(ds, "RescaleIntercept", 0.0, path)
    if slope == 0.0:
        raise InputError(f"{path}: DICOM RescaleSlope is 0, which maps every pixel to one value")

    def rescale(values: np.ndarray) -> np.ndarray:
        if slope == 1.0 and intercept == 0.0:
            return values
        return values * slope + intercept

    return pixels, rescale, lambda: rescale(pixels.astype(np.float64))


def _number(ds: Dataset, keyword: str, default: float, path: Path) -> float:
    value = _first_value(ds.get(keyword))
    if value is None:
        return default
    if not math.isfinite(value):
        raise InputError(f"{path}: DICOM {keyword} is {value:g}; the file is not usable")
    return value


def _window(ds: Dataset, rescale: Any, path: Path, notes: list[str]) -> Any:
    """The window (PS3.3 C.11.2.1.2) as a function of stored values, or None to use the range.

    A window that is empty, not finite or narrower than 1 is ignored with a note: applying it
    would give a blank or meaningless image.
    """
    if "WindowCenter" not in ds and "WindowWidth" not in ds:
        return None
    centre = _first_value(ds.get("WindowCenter"))
    width = _first_value(ds.get("WindowWidth"))
    if centre is None or width is None or not (math.isfinite(centre) and math.isfinite(width)):
        notes.append(
            f"DICOM window ignored (centre {_show(centre)}, width {_show(width)}: empty or not "
            "finite); used the real range"
        )
        return None
    if width < 1.0:
        notes.append(f"DICOM window ignored (width {width:g} < 1); used the real range")
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    notes.append(f"DICOM window centre {centre:g} width {width:g}")
    if function == "SIGMOID":
        return lambda v: 255.0 / (1.0 + np.exp(-4.0 * (rescale(v) - centre) / width))
    if function == "LINEAR_EXACT":
        return lambda v: ((rescale(v) - centre) / width + 0.5) * 255.0
    if width == 1.0:
        return lambda v: np.where(rescale(v) <= centre - 0.5, 0.0, 255.0)
    return lambda v: ((rescale(v) - (centre - 0.5)) / (width - 1.0) + 0.5) * 255.0


def _first_value(value: Any) -> float | None:
    # Window and rescale values may be multi-valued; the first is the default presentation.
    if not isinstance(value, (str, bytes, type(None))) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _show(value: float | None) -> str:
    return "empty" if value is None else f"{value:g}"


def _linear(low: float, high: float, path: Path) -> Any:
    if high <= low:
        raise InputError(blank_message(path, f"{low:g}"))
    factor = 255.0 / (high - low)
    return lambda v: (v - low) * factor


def _first_line(exc: BaseException) -> str:
    # One line for the error record: pydicom puts the real cause on the lines after the first.
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:200] if text else type(exc).__name__
