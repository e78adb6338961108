"""The decoders' own warnings, silenced for the whole process: btxrd says it in its own words."""

from __future__ import annotations

import ctypes
import logging
import os
import warnings

from PIL import Image


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
