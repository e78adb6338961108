"""Where a command's outputs go, checked before any work is done: a folder that can be made
and written, a file whose folder exists, a standard output that is open."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from btxrd.runtime.errors import OutputError


def prepare_output_dir(folder: Path) -> Path:
    """Create ``folder`` (and its parents) for a command's outputs; ``OutputError`` if it cannot
    be created or written, before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot create the output folder ({exc.strerror or exc}); choose another"
        ) from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{folder}: output folder is not writable; choose another one")
    return folder


def check_output_file(path: Path) -> None:
    """``OutputError`` unless ``path``'s folder exists and is writable (checked before work)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable; choose another")


def require_stdout(what: str) -> None:
    """Refuse, before any work, to write ``what`` to a standard output the process was started
    without (cron or a service manager may close it): it would be lost without a word."""
    if sys.stdout is None:
        raise OutputError(
            f"standard output is closed, so {what} would be lost; pass --output FILE (or start "
            "the command with stdout open)"
        )
