"""How btxrd writes text it did not choose (file names, messages that quote them): valid UTF-8
in every output file, and nothing a terminal would act on."""

from __future__ import annotations

import os
import re
from pathlib import Path

# "<_io.BytesIO object at 0x7f17...>": a decoder's repr of its buffer; the address changes from
# run to run and tells the user nothing.
_OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def text_of(path: str | Path) -> str:
    """A path as text any UTF-8 writer accepts: bytes that are not UTF-8 (which Python keeps as
    lone surrogates) appear as ``\\xNN``, so a CSV or JSON record never fails on a file name."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_text(path: str | Path) -> tuple[str, bool]:
    """A file name as record text that names it unambiguously, and whether it is escaped.

    A name that is valid UTF-8 is its own text. One that is not (Linux allows any bytes) is
    escaped: each byte that is not UTF-8 as ``\\xNN`` and each backslash doubled, and the
    flag says so, so the name ``scan-\\xff.png`` (literal text) and a name holding the byte 0xff
    never share a record key. ``name_bytes`` reverses it.
    """
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace"), True


_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def name_bytes(text: str, escaped: bool) -> bytes:
    """The file name ``name_text`` wrote as ``text`` (with its ``escaped`` flag)."""
    raw = text.encode("utf-8")
    if not escaped:
        return raw
    return _ESCAPE.sub(lambda m: b"\\" if m[1] == b"\\" else bytes([int(m[1][1:], 16)]), raw)


def for_terminal(text: str) -> str:
    """``text`` with control characters shown as escapes, so a file name cannot move the cursor,
    recolour or retitle the user's terminal (as ``ls`` and ``git`` quote such names)."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``1,000 images`` (nouns that take an s)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def cause_of(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line for an error record: its lines joined (pydicom puts the real
    cause after the first), object addresses dropped (records must not differ between runs)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = _OBJECT_ADDRESS.sub(">", text)
    return text[:limit] if text else type(exc).__name__
