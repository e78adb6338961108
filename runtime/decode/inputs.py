"""Turn command-line arguments into an ordered list of input files."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from btxrd.runtime.decode.formats import image_suffixes


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder walk, and what could not be looked at (each gets an error
    record, so nothing is skipped without a word)."""

    paths: list[Path]
    problems: list[tuple[Path, str]]  # (path, message)


def collect_folder(folder: Path, *, recursive: bool, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Image files in ``folder`` (sorted), skipping hidden entries and ``exclude`` folders."""
    return walk_folder(folder, recursive=recursive, exclude=exclude).paths


def walk_folder(folder: Path, *, recursive: bool, exclude: tuple[Path, ...] = ()) -> FolderListing:
    """Regular image files in ``folder`` (sorted), skipping hidden entries and ``exclude``
    folders; unreadable sub-folders and image-named FIFOs, devices or sockets are problems.

    Symbolic links to folders are followed once each, so a link loop cannot recurse forever.
    Only regular files are listed: opening a FIFO would wait forever for a writer.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    seen_dirs: set[str] = set()
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def unreadable(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        problems.append(
            (
                where,
                f"{where}: cannot read this folder ({error.strerror or error}); "
                "its images were not classified: make it readable and rerun",
            )
        )

    for root, dirs, files in os.walk(folder, followlinks=True, onerror=unreadable):
        real = os.path.realpath(root)
        if real in seen_dirs or real in excluded:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if name.startswith(".") or not name.lower().endswith(image_suffixes()):
                continue
            path = Path(root) / name
            kind = _not_regular(path)
            if kind:
                problems.append((path, f"{path}: is a {kind}, not a regular file; not read"))
                continue
            found.append(path)
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    problems.sort(key=lambda item: str(item[0]))
    return FolderListing(found, problems)


def _not_regular(path: Path) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # broken link or unreadable: the decoder names the cause in the record
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def display_names(paths: list[Path], base: Path | None = None) -> list[str]:
    """A name per input that tells inputs apart in a table or a record: the path relative to
    ``base`` (the ``--dir`` folder), else the file name, lengthened by parent folders only where
    two inputs share it (``left/knee.png``, ``right/knee.png``)."""
    parts = [
        path.relative_to(base).parts
        if base is not None and path.is_relative_to(base)
        else Path(os.path.normpath(path)).parts
        for path in paths
    ]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group]
        growable = [i for i in clashes if depth[i] < len(parts[i])]
        if not growable:
            break
        for i in growable:
            depth[i] += 1
    # The same file given twice keeps one name per occurrence.
    counts: dict[str, int] = {}
    unique = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        unique.append(name if counts[name] == 1 else f"{name} ({counts[name]})")
    return unique


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
