"""The one way btxrd writes a file: never a half-written result, the old file intact on failure."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class AtomicFile:
    """A file written beside ``path`` under a temporary name: ``commit`` fsyncs it and renames it
    over ``path``; ``abort`` (or any failure) deletes it, so the old ``path`` stays intact."""

    def __init__(self, path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> None:
        self.path = Path(path)
        fd, self._tmp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            # mkstemp creates 0600; results are ordinary files, so honour the umask as open() does.
            os.fchmod(fd, 0o666 & ~_current_umask())
            binary = "b" in mode
            self.handle: IO = os.fdopen(fd, mode, encoding=None if binary else encoding)
        except BaseException:
            os.close(fd)
            self._remove()
            raise

    def commit(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self._tmp_name, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()  # may fail again on a full disk: the file goes anyway
        self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_name)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temp file beside ``path``; fsync and rename over it only if the block succeeds."""
    file = AtomicFile(path, mode, encoding)
    try:
        yield file.handle
    except BaseException:
        file.abort()
        raise
    file.commit()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
