"""One writer per output: a run holds an exclusive lock beside its output for its whole life.

The lock is ``flock`` on ``OUT.lock`` (beside the file, or beside a Parquet folder), so the
kernel releases it when the process ends in any way, SIGKILL included: a lock file a dead run
left behind is simply taken over. The file holds the holder's pid, host, start time and command,
which is what a second run quotes when it is refused. The holder deletes the file when it is
done, while still holding the lock; a run that opened the file just before that checks, once it
holds the lock, that the file is still the one at the path, and otherwise tries again.

Where the file system cannot lock (some network mounts), the run refuses unless ``--force``:
without a lock nothing stops a second run from interleaving its records with this one's.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from btxrd.runtime.errors import OutputError
from btxrd.runtime.text import text_of

LOCK_SUFFIX = ".lock"
# What flock raises where the file system has no working locks (NFS without lockd, some FUSE).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_path(output: Path) -> Path:
    """The lock of ``output``: beside what a write really replaces (a symlink's target), so two
    spellings of one output share one lock."""
    real = Path(os.path.realpath(output))
    return real.with_name(real.name + LOCK_SUFFIX)


@contextlib.contextmanager
def output_lock(output: Path, *, force: bool = False) -> Iterator[bool]:
    """Hold ``output``'s lock for the block; yields whether a lock is held (False only with
    ``force`` on a file system without locks). ``OutputError`` if another run holds it."""
    where = lock_path(output)
    fd = _acquire(output, where, force)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(where)  # still locked: nobody can be using this file as theirs
            os.close(fd)


def _acquire(output: Path, where: Path, force: bool) -> int | None:
    while True:
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(
                f"{output}: cannot create its lock file {where} ({exc.strerror or exc}); "
                "choose an output in a folder you can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"{output}: another btxrd run is writing it ({holder}); wait for it to end, or "
                "choose another --output"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LOCKS:
                raise
            if force:
                return None
            raise OutputError(
                f"{output}: this file system cannot lock files ({exc.strerror}), so btxrd cannot "
                "make sure no other run writes the same output; write to a local disk, or add "
                "--force if no other run can"
            ) from None
        if _still_at(fd, where):
            _describe_self(fd)
            return fd
        os.close(fd)  # its holder deleted it as we opened it: lock the new one


def _still_at(fd: int, where: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(where)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _describe_self(fd: int) -> None:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": started,
        "command": shlex.join(text_of(a) for a in sys.argv),
    }
    data = (json.dumps(holder) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _holder(fd: int) -> str:
    """The running holder in words, from what it wrote into the lock file."""
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
        return (
            f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
            f"{holder['command']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "it is just starting"  # locked but not yet described
