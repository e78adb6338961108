"""Turn command-line arguments into an ordered list of input files."""

from __future__ import annotations

import os
from pathlib import Path

from btxrd.runtime.imageio import IMAGE_SUFFIXES


def collect_folder(folder: Path, *, recursive: bool, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Image files in ``folder`` (sorted), skipping hidden entries and ``exclude`` folders.

    Symbolic links to folders are followed once each, so a link loop cannot recurse forever.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    seen_dirs: set[str] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs or real in excluded:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def output_names(paths: list[Path], base: Path | None, suffix: str) -> list[str]:
    """One output file name per input, never two the same (same stem in two sub-folders)."""
    names: list[str] = []
    used: set[str] = set()
    for path in paths:
        if base is not None and path.is_relative_to(base):
            stem = path.relative_to(base).with_suffix("").as_posix().replace("/", "__")
        else:
            stem = path.stem
        candidate = f"{stem}{suffix}"
        counter = 1
        while candidate in used:
            counter += 1
            candidate = f"{stem}-{counter}{suffix}"
        used.add(candidate)
        names.append(candidate)
    return names
