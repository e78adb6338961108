"""The one way btxrd writes a file: never a half-written result, never a file it must not touch.

What stands at the destination decides how it is written:

- nothing, or a regular file: a temporary file beside it, fsynced and renamed over it, so the
  old file stays intact until the new one is complete; a replaced file keeps its permission bits;
- a symbolic link: the same, at the link's target (the link itself stays a link);
- a device, FIFO or terminal (``/dev/stdout``, ``/dev/null``, a named pipe): written directly,
  since renaming over it would put a regular file in its place;
- a folder, or a file registered with ``protect`` (the inputs, the model, the checkpoint):
  refused with ``OutputError`` before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from btxrd.runtime.errors import OutputError

# (st_dev, st_ino) of files no output may replace; filled by the commands through ``protect``.
_PROTECTED: dict[tuple[int, int], str] = {}


def protect(paths: Iterable[str | Path], role: str) -> None:
    """Refuse, from now on in this process, to write over any of ``paths`` (compared by device
    and inode, so another spelling, a symlink or a hard link of the same file is caught too)."""
    for path in paths:
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            continue  # a missing input cannot be overwritten; it gets its own error record
        if stat.S_ISREG(info.st_mode):
            _PROTECTED.setdefault((info.st_dev, info.st_ino), f"{role} {path}")


def unprotect_all() -> None:
    """Forget every protected file (tests, and long-lived processes between runs)."""
    _PROTECTED.clear()


@dataclass(frozen=True)
class Destination:
    """Where a write to ``path`` really goes, decided by what stands there (module docstring)."""

    path: Path  # as the user spelled it
    target: Path  # the file a rename must replace (a symlink's target)
    direct: bool  # a device, FIFO or terminal: write in place, never rename over it
    mode_bits: int  # permission bits for the new file: the old file's, or the umask's default


def destination(path: str | Path) -> Destination:
    """Check ``path`` as an output and say how to write it; ``OutputError`` for a folder or a
    protected file."""
    path = Path(path)
    existing = _existing(path)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        if stat.S_ISDIR(existing.st_mode):
            raise OutputError(f"{path}: is a folder; give a file name to write")
        return Destination(path, path, True, 0)
    if existing is not None:
        _refuse_protected(path, existing)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    # mkstemp creates 0600: a replaced file keeps its bits, a new one honours the umask.
    bits = stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_current_umask()
    return Destination(path, target, False, bits)


def replace_into(tmp_name: str, where: Destination) -> None:
    """Give the finished temporary file its permission bits and rename it over the target."""
    os.chmod(tmp_name, where.mode_bits)
    os.replace(tmp_name, where.target)


class AtomicFile:
    """A file written beside ``path`` under a temporary name: ``commit`` fsyncs it and renames it
    over ``path``; ``abort`` (or any failure) deletes it, so the old ``path`` stays intact.
    Devices and FIFOs are written directly (see the module docstring)."""

    def __init__(self, path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> None:
        self.path = Path(path)
        self._where = destination(self.path)
        text_encoding = None if "b" in mode else encoding
        self._tmp_name: str | None = None
        if self._where.direct:
            self.handle: IO = open(self.path, mode, encoding=text_encoding)  # noqa: SIM115
            return
        fd, self._tmp_name = tempfile.mkstemp(
            prefix=f".{self._where.target.name}.", suffix=".tmp", dir=self._where.target.parent
        )
        try:
            self.handle = os.fdopen(fd, mode, encoding=text_encoding)
        except BaseException:
            os.close(fd)
            self._remove()
            raise

    def commit(self) -> None:
        try:
            self.handle.flush()
            if self._tmp_name is None:
                self.handle.close()
                return
            os.fsync(self.handle.fileno())
            self.handle.close()
            replace_into(self._tmp_name, self._where)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()  # may fail again on a full disk: the file goes anyway
        self._remove()

    def _remove(self) -> None:
        if self._tmp_name is not None:
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


# What to do about a failed write, by its cause: each cause has its own fix.
_FIXES = {
    errno.ENOSPC: "Free some space",
    errno.EDQUOT: "Free some space within your disk quota",
    errno.EFBIG: "The file outgrew the size limit of this process or file system; choose "
    "another --output",
    errno.ENOENT: "Its folder was removed or renamed while btxrd ran; create it again",
    errno.ENOTDIR: "Its folder was replaced by a file while btxrd ran; put the folder back",
    errno.EISDIR: "A folder now stands at that path; move it away",
    errno.EACCES: "Make the folder writable, or choose another --output",
    errno.EPERM: "Make the folder writable, or choose another --output",
    errno.EROFS: "The file system is read-only; choose another --output",
}


def cannot_write(exc: OSError) -> str:
    """The cause of a failed write in words, for ``PATH: {cannot_write(exc)}``."""
    return f"cannot write ({exc.strerror or exc})"


def fix_for(exc: OSError) -> str:
    """What the user can do about ``exc``, as a sentence."""
    return _FIXES.get(exc.errno, "Check the disk and the path") if exc.errno else "Check the disk"


def _existing(path: Path) -> os.stat_result | None:
    """What stands at ``path`` (following symlinks), or None for nothing or a dangling link."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from None


def _refuse_protected(path: Path, existing: os.stat_result) -> None:
    what = _PROTECTED.get((existing.st_dev, existing.st_ino))
    if what is not None:
        raise OutputError(
            f"{path}: is the {what}; writing there would destroy it. Choose another output path"
        )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
