"""DICOM input through pydicom (the optional ``[dicom]`` extra), turned into an 8-bit image.

The standard's grayscale pipeline (PS3.3 C.11), each stage by pydicom: stored values (limited to
Bits Stored) -> modality LUT (``apply_modality_lut``: a Modality LUT Sequence, or rescale slope
and intercept) -> VOI (``apply_voi``: the VOI LUT Sequence, preferred; else ``apply_windowing``:
the window, LINEAR, LINEAR_EXACT or SIGMOID) onto 0..255 -> MONOCHROME1 inverted. Without a VOI,
or with a window that cannot be applied, the real range of the modality output is used, never a
clip. The record's notes say which LUT or window was used.

Nothing is decoded before the header has been checked against the decode limits: the header is
read with the pixel data deferred (for the deflated syntax, inflated no further than the header),
then only the first frame is decoded. pydicom's stages are applied in bands of rows, so no
float64 copy of the whole image is made.

The file's identifiers (UIDs, body part, laterality) come along as text for the record
(``DecodedImage.identifiers``)."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from btxrd.runtime.decode.decoded import Identifiers, check_size
from btxrd.runtime.decode.formats import DICOM_FORMAT
from btxrd.runtime.decode.pixels import blank_message, map_to_uint8, row_bands, value_range
from btxrd.runtime.errors import InputError, raised_by_btxrd
from btxrd.runtime.install import install_hint
from btxrd.runtime.settings import DecodeLimits
from btxrd.runtime.text import cause_of

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
# What a record carries to identify a DICOM image: key -> attributes, the first present wins
# (Image Laterality is the image's own; Laterality, the series', stands in for it).
DICOM_FIELDS = {
    "study_instance_uid": ("StudyInstanceUID",),
    "series_instance_uid": ("SeriesInstanceUID",),
    "sop_instance_uid": ("SOPInstanceUID",),
    "body_part_examined": ("BodyPartExamined",),
    "laterality": ("ImageLaterality", "Laterality"),
}
# Values are text from the file: a UID has at most 64 characters, a code string 16.
_MAX_TEXT = 128
_MAX_FIELD_BYTES = 4096
_PADDING = " \t\r\n\x00"
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
) -> tuple[Image.Image, tuple[str, ...], Identifiers]:
    """Read a DICOM file as an 8-bit "L" or "RGB" image, plus notes on what was applied and the
    identifiers of the file (``DICOM_FIELDS``)."""
    limits = limits or DecodeLimits()
    try:
        import pydicom
        from pydicom.errors import BytesLengthException, InvalidDicomError
    except ImportError:
        raise InputError(
            f"{path}: DICOM input needs pydicom; install it with {install_hint('dicom')}"
        ) from None
    errors = (InvalidDicomError, BytesLengthException, *_DICOM_ERRORS)
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        syntax = meta.get("TransferSyntaxUID")
    except errors as exc:
        if raised_by_btxrd(exc):
            raise  # btxrd's bug: the internal-error path, not the user's malformed file
        raise InputError(f"{path}: not a readable DICOM file ({cause_of(exc)})") from None
    # pydicom converts each element when it is first used, so a malformed value raises wherever
    # it is read: the whole reading is fenced, with narrower messages raised inside.
    try:
        if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
            ds = _read_deflated(path, meta, limits)
        else:
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
            _check_header(ds, path, limits, inflated=False)
        pixels = _first_frame(ds, path, syntax, errors)
        image, notes = _to_image(ds, pixels, path)
        found: list[str] = []
        identifiers = _identifiers(ds, found)
        return image, (*notes, *found), identifiers
    except InputError:
        raise
    except errors as exc:
        if raised_by_btxrd(exc):
            raise  # btxrd's bug: the internal-error path, not the user's malformed file
        raise InputError(f"{path}: malformed DICOM data ({cause_of(exc)})") from None


def _identifiers(ds: Dataset, notes: list[str]) -> Identifiers:
    """What identifies the image (``DICOM_FIELDS``), as stripped text of capped length; a value
    that cannot be read, or is absurdly long, is left out (None) with a note."""
    found: dict[str, str | None] = dict.fromkeys(DICOM_FIELDS)
    for key, keywords in DICOM_FIELDS.items():
        for keyword in keywords:
            if keyword not in ds:
                continue
            length = getattr(ds.get_item(keyword), "length", 0) or 0
            if length > _MAX_FIELD_BYTES:
                notes.append(f"DICOM {keyword} of {length:,} bytes left out of the record")
                continue
            try:
                text = _text(ds[keyword].value)
            except _DICOM_ERRORS as exc:
                if raised_by_btxrd(exc):
                    raise  # btxrd's bug: the internal-error path, not the user's malformed file
                notes.append(f"DICOM {keyword} unreadable ({cause_of(exc)}); left out")
                continue
            if text:
                found[key] = text
                break
    return Identifiers(DICOM_FORMAT, found)


def _text(value: Any) -> str | None:
    """A value from the file as text for a record or a note: stripped, at most ``_MAX_TEXT``
    characters, valid UTF-8 (lone surrogates shown as escapes); None when empty."""
    parts = [
        v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
        for v in _list(value)
    ]
    text = "\\".join(parts).strip(_PADDING)[:_MAX_TEXT].rstrip(_PADDING)
    return text.encode("utf-8", "backslashreplace").decode("utf-8") or None


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
        if raised_by_btxrd(exc):
            raise  # btxrd's bug: the internal-error path, not the user's malformed file
        cause = cause_of(exc)
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
            if raised_by_btxrd(exc):
                raise  # btxrd's bug: the internal-error path, not the user's malformed file
            raise InputError(f"{path}: malformed DICOM palette ({cause_of(exc)})") from None
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
    modality = _modality(ds, path, notes)
    voi = _voi(ds, path, notes)
    if voi is None:
        # No VOI: the real range of the modality output, never a clip.
        linear = _linear(*_modality_range(pixels, modality, path), path)
        gray = map_to_uint8(pixels, lambda v: linear(modality(v)))
    else:
        gray = map_to_uint8(pixels, lambda v: voi(modality(v)))
    if photometric == "MONOCHROME1":
        np.subtract(255, gray, out=gray)
        notes.append("MONOCHROME1 inverted")
    return Image.fromarray(gray), tuple(notes)


# pydicom's modality and VOI functions work on whatever array they are given, and make float64
# copies and masks of it: on a whole 9900 x 9900 frame that is several GB. They are pointwise, so
# here they are called on bands of rows (``map_to_uint8``), which gives the same values.
Stage = Callable[[np.ndarray], np.ndarray]


def _modality(ds: Dataset, path: Path, notes: list[str]) -> Stage:
    """The modality stage (PS3.3 C.11.1) as a function of a band of stored values, by pydicom.

    A Modality LUT Sequence is used when present (pydicom does the same); otherwise Rescale
    Slope and Intercept, checked first: not finite is refused, slope 0 is refused, and a missing
    one takes its default (1 or 0), where pydicom would drop the rescale unless both are present.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        entries, first, _ = _lut_descriptor(ds.ModalityLUTSequence[0], path, "modality LUT")
        notes.append("DICOM modality LUT applied")
        return lambda v: _fenced(
            path, "modality LUT", apply_modality_lut, _lut_input(v, entries, first), ds
        )
    slope = _number(ds, "RescaleSlope", 1.0, path)
    intercept = _number(ds, "RescaleIntercept", 0.0, path)
    if slope == 0.0:
        raise InputError(f"{path}: DICOM RescaleSlope is 0, which maps every pixel to one value")
    if slope == 1.0 and intercept == 0.0:
        return lambda v: v
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept = slope, intercept
    return lambda v: _fenced(path, "rescale", apply_modality_lut, v, rescale)


def _modality_range(pixels: np.ndarray, modality: Stage, path: Path) -> tuple[float, float]:
    """Minimum and maximum of the modality output, band by band; NaN or infinity refused."""
    low, high = np.inf, -np.inf
    for rows in row_bands(pixels):
        band = modality(pixels[rows].astype(np.float64))
        if band.size:
            low, high = min(low, float(band.min())), max(high, float(band.max()))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{path}: pixel data contains NaN or infinity; the file is not usable")
    return low, high


def _voi(ds: Dataset, path: Path, notes: list[str]) -> Stage | None:
    """The VOI stage (PS3.3 C.11.2) onto 0..255 by pydicom, or None when there is none.

    A file may carry both a VOI LUT Sequence and a window: the standard calls them alternative
    views, one of which is applied (C.11.2); it does not rank them. The LUT is used, as by
    pydicom's ``apply_voi_lut`` (``prefer_lut=True``); btxrd used the window before.
    Of several LUTs or windows, the first is used, as pydicom's ``index=0``.
    """
    from pydicom.pixels import apply_voi

    windowed = "WindowCenter" in ds or "WindowWidth" in ds
    luts = ds.get("VOILUTSequence")
    if luts:
        item = luts[0]
        if "LUTDescriptor" in item and "LUTData" in item:
            entries, first, bits = _lut_descriptor(item, path, "VOI LUT")
            # C.11.2.1.1: the LUT's entries range over 0..2^n - 1, n its descriptor's third value.
            scale = 255.0 / (2**bits - 1)
            note = "DICOM VOI LUT applied" + _which(
                "LUT", len(luts), _text(item.get("LUTExplanation"))
            )
            if windowed:
                note += "; the file's window was not used (the LUT is preferred)"
            notes.append(note)
            source = _wide_indices(ds, item) if bits == 8 and entries > 256 else ds
            return lambda v: (
                _fenced(path, "VOI LUT", apply_voi, _lut_input(v, entries, first), source) * scale
            )
        # pydicom's rule too: an item without its descriptor or data is no LUT.
        notes.append("DICOM VOI LUT Sequence without LUT Descriptor or LUT Data ignored")
    return _window(ds, path, notes) if windowed else None


def _wide_indices(ds: Dataset, item: Dataset) -> Dataset:
    """A VOI-only dataset of ``item`` whose descriptor says 16 bits, for pydicom to index it.

    pydicom 3.0.2 computes LUT indices in the entries' own type, so an 8-bit LUT of more than
    256 entries wraps every index past 255 onto the start. With 16 bits said it reads the same
    entries (LUT Data is read in 16-bit words either way) and indexes them in uint16; the output
    is still scaled by the 8 bits the file says.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    descriptor, data = item["LUTDescriptor"], item["LUTData"]
    wide = Dataset()
    wide.add_new(descriptor.tag, descriptor.VR, [*list(descriptor.value)[:2], 16])
    wide.add_new(data.tag, data.VR, data.value)
    holder = Dataset()
    holder.VOILUTSequence = Sequence([wide])
    # pydicom reads OW LUT Data in the byte order of the file, from its meta or encoding.
    if hasattr(ds, "file_meta"):
        holder.file_meta = ds.file_meta
    else:
        holder.set_original_encoding(*ds.original_encoding)
    return holder


def _window(ds: Dataset, path: Path, notes: list[str]) -> Stage | None:
    """The first window (C.11.2.1.2, C.11.2.1.3) by pydicom's ``apply_windowing``, onto 0..255.

    pydicom's output range [y_min, y_max] is that of the input (Bits Stored and Pixel
    Representation, rescaled); given a VOI-only dataset of 8 unsigned bits without rescale, it is
    exactly 0..255: LINEAR and LINEAR_EXACT map the window onto it, SIGMOID is
    255 / (1 + exp(-4 (x - c) / w)). A window that is empty, not finite or narrower than the
    standard allows (LINEAR at least 1, LINEAR_EXACT and SIGMOID above 0) is ignored with a
    note: applying it would give a blank or meaningless image.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    centres, widths = _values(ds.get("WindowCenter")), _values(ds.get("WindowWidth"))
    centre = centres[0] if centres else None
    width = widths[0] if widths else None
    if centre is None or width is None or not (math.isfinite(centre) and math.isfinite(width)):
        notes.append(
            f"DICOM window ignored (centre {_show(centre)}, width {_show(width)}: empty or not "
            "finite); used the real range"
        )
        return None
    function = str(ds.get("VOILUTFunction", "") or "").strip().upper() or "LINEAR"
    if function not in _VOI_FUNCTIONS:
        notes.append(f"DICOM VOI LUT Function {_text(function)!r} unknown; applied LINEAR")
        function = "LINEAR"
    if function == "LINEAR" and width < 1.0:
        notes.append(f"DICOM window ignored (width {width:g} < 1); used the real range")
        return None
    if width <= 0.0:
        notes.append(f"DICOM {function} window ignored (width {width:g} <= 0); used the real range")
        return None
    explanations = _list(ds.get("WindowCenterWidthExplanation"))
    note = f"DICOM window centre {centre:g} width {width:g}"
    if function != "LINEAR":
        note += f", {function}"
    count = max(len(centres), len(widths))
    notes.append(note + _which("window", count, _text(explanations[0] if explanations else None)))
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 8, 0
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = centre, width, function
    return lambda v: _fenced(path, "window", apply_windowing, v, voi)


_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_VOI_BITS = (8, *range(10, 17))


def _which(kind: str, count: int, explanation: str | None) -> str:
    """Which of several alternatives was used, with the file's own explanation of it."""
    named = f": {explanation!r}" if explanation else ""
    if count > 1:
        return f" ({kind} 1 of {count}{named})"
    return f" ({explanation!r})" if explanation else ""


def _lut_descriptor(item: Dataset, path: Path, what: str) -> tuple[int, int, int]:
    """Entries, first value mapped and bits of a LUT (C.11.1.1.1, C.11.2.1.1), checked against
    its data, so a short table is refused whatever values the pixels hold."""
    try:
        entries, first, bits = (int(v) for v in _list(item.get("LUTDescriptor")))
    except (TypeError, ValueError):
        raise InputError(
            f"{path}: malformed DICOM {what} (LUT Descriptor is not 3 numbers)"
        ) from None
    entries = entries or 65536  # 0 means 2^16 entries
    # pydicom reads 8- or 16-bit modality LUTs and 8- or 10- to 16-bit VOI LUTs (the standard's
    # current and earlier editions).
    allowed, said = ((8, 16), "8 or 16") if what == "modality LUT" else (_VOI_BITS, "8 or 10-16")
    if bits not in allowed:
        raise InputError(
            f"{path}: malformed DICOM {what} (entries of {bits} bits; pydicom reads {said})"
        )
    element = item["LUTData"]
    value = element.value
    held = len(value) // 2 if isinstance(value, bytes) else len(_list(value))
    if held < entries:
        raise InputError(
            f"{path}: malformed DICOM {what} (LUT Descriptor says {entries} entries, LUT Data "
            f"holds {held})"
        )
    return entries, first, bits


def _lut_input(values: np.ndarray, entries: int, first: int) -> np.ndarray:
    """Input values for a LUT: below its first value mapped, the first entry; above its last,
    the last (C.11.1.1.1, C.11.2.1.1); modality output that is not integral, the nearest entry.

    pydicom subtracts the first value mapped in uint16 before it clips, so a value 2^16 past the
    first wraps onto an entry near the start (pydicom 3.0.2); clipped here first, it cannot.
    """
    clipped = np.clip(values, first, first + entries - 1)
    return np.rint(clipped).astype(np.int64)


def _fenced(path: Path, what: str, apply: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    try:
        return np.asarray(apply(*args), dtype=np.float64)
    except _DICOM_ERRORS as exc:
        if raised_by_btxrd(exc):
            raise  # btxrd's bug: the internal-error path, not the user's malformed file
        raise InputError(f"{path}: malformed DICOM {what} ({cause_of(exc)})") from None


def _number(ds: Dataset, keyword: str, default: float, path: Path) -> float:
    values = _values(ds.get(keyword))
    if not values:
        return default
    value = values[0]  # multi-valued by mistake: the first, as for the window
    if not math.isfinite(value):
        raise InputError(f"{path}: DICOM {keyword} is {value:g}; the file is not usable")
    return value


def _list(value: Any) -> list[Any]:
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return []
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        return list(value)
    return [value]


def _values(value: Any) -> list[float]:
    # Window and rescale values may be multi-valued; the first is the default presentation.
    numbers = []
    for item in _list(value):
        try:
            numbers.append(float(item))
        except (TypeError, ValueError):
            numbers.append(math.nan)
    return numbers


def _show(value: float | None) -> str:
    return "empty" if value is None else f"{value:g}"


def _linear(low: float, high: float, path: Path) -> Any:
    if high <= low:
        raise InputError(blank_message(path, f"{low:g}"))
    factor = 255.0 / (high - low)
    return lambda v: (v - low) * factor
