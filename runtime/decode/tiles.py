"""Pillow's decoder tiles: the raw mode each tile is unpacked with, read and replaced.

Both repairs of what Pillow reads wrong (TIFF sample layouts, 16-bit colour) work by handing a
tile another unpacker before the pixels load."""

from __future__ import annotations

from typing import Any


def rawmode(args: object) -> str | None:
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def with_rawmode(args: tuple[Any, ...] | str | None, rawmode: str) -> tuple[Any, ...] | str:
    return rawmode if isinstance(args, str) or not args else (rawmode, *args[1:])
