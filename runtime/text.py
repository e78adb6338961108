"""How btxrd writes text it did not choose (file names, messages that quote them): valid UTF-8
in every output file, and nothing a terminal would act on."""

from __future__ import annotations

import os
from pathlib import Path


def text_of(path: str | Path) -> str:
    """A path as text any UTF-8 writer accepts: bytes that are not UTF-8 (which Python keeps as
    lone surrogates) appear as ``\\xNN``, so a CSV or JSON record never fails on a file name."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def for_terminal(text: str) -> str:
    """``text`` with control characters shown as escapes, so a file name cannot move the cursor,
    recolour or retitle the user's terminal (as ``ls`` and ``git`` quote such names)."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``1,000 images`` (nouns that take an s)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
