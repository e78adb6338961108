"""Decode an image file into an 8-bit grayscale or RGB Pillow image, the one documented way.

Only the formats radiographs come in are decoded: DICOM through pydicom (``dicom``), the others
through Pillow (``pillow``); anything else is refused by its real format. Every image ends up
as mode "L" or "RGB", so preprocessing has exactly two cases; an image with no content (every
pixel the same) is refused. Sizes are checked from the header before any pixel is decoded, and
deep (16-bit, 32-bit, float) data is scaled in bands of rows, so memory stays near the size of the
decoded image. Failures raise ``InputError`` naming the file, the cause and the fix; Pillow's and
pydicom's own exceptions never escape.
"""

from __future__ import annotations

import stat
from pathlib import Path

from PIL import Image

from btxrd.runtime.decode.decoded import NOT_JPEG_NOTE, DecodedImage
from btxrd.runtime.decode.formats import DICOM, image_suffixes
from btxrd.runtime.decode.pillow import decode_opened, load_pillow
from btxrd.runtime.decode.pixels import refuse_blank
from btxrd.runtime.errors import InputError
from btxrd.runtime.settings import DecodeLimits

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


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
        from btxrd.runtime.decode.dicom import load_dicom  # pydicom only when a DICOM file is met

        image, notes, identifiers = load_dicom(path, limits)
        if draft is not None:
            notes = (*notes, NOT_JPEG_NOTE)
        decoded = DecodedImage(
            image=image, source_mode="DICOM", notes=notes, identifiers=identifiers
        )
    else:
        decoded = load_pillow(path, head, limits, draft)
    refuse_blank(decoded.image, path)
    return decoded


def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in image_suffixes(DICOM) or head[128:132] == b"DICM"


def decode_pil(
    image: Image.Image,
    name: str = "<image>",
    limits: DecodeLimits | None = None,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Normalise an already-open Pillow image (API callers passing images, not paths); ``draft``
    as for ``load_image`` (it applies only to a JPEG whose pixels are not loaded yet)."""
    decoded = decode_opened(image, Path(name), limits or DecodeLimits(), None, draft)
    refuse_blank(decoded.image, name)
    return decoded


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
