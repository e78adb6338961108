"""JSON-lines results that survive the process: Ctrl-C, SIGTERM, SIGKILL or a power cut.

Records stream into a journal beside the output, ``OUT.partial``: each line is written whole and
flushed, and the journal is fsynced at least every ``FSYNC_SECONDS``, so a killed run leaves every
finished record on disk (a power cut loses at most the last seconds). When the run ends, also by
Ctrl-C or SIGTERM, the journal is fsynced and renamed over ``OUT``; until then a previous ``OUT``
stays as it was. ``--resume`` continues the journal of an unfinished run, or else ``OUT``, and
only when every record there was written by btxrd-run for the same model file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from btxrd.runtime.atomic import Destination, destination, replace_into
from btxrd.runtime.errors import OutputError

JOURNAL_SUFFIX = ".partial"
FSYNC_SECONDS = 2.0
# The fields every btxrd-run JSONL record carries; a line without them is not ours.
RECORD_FIELDS = ("image_name", "prediction", "scores", "path", "error", "model_sha256")


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + JOURNAL_SUFFIX)


def input_key(path: str) -> str:
    """How an input is recognised across runs: its absolute, symlink-free path, so ``a.png``,
    ``./a.png`` and ``/data/a.png`` are one input."""
    return os.path.realpath(path)


def read_finished(path: Path, model_sha256: str) -> tuple[list[str], frozenset[str]]:
    """The lines of ``path`` that record a classified input, and those inputs' keys.

    Records of failed inputs are dropped (they run again), as is a last line cut by a kill. A line
    that is not a btxrd-run record, or a record of another model, is an ``OutputError``: resuming
    onto it would mix results that do not belong together.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _foreign(path, "it is not UTF-8 text") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot read it to resume ({exc.strerror or exc})") from None
    lines = text.split("\n")
    kept: list[str] = []
    keys: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the line a kill cut short
                continue
            raise _foreign(path, f"line {number} is not JSON") from None
        if not isinstance(record, dict) or any(f not in record for f in RECORD_FIELDS):
            raise _foreign(path, f"line {number} is not a btxrd-run record")
        if record["model_sha256"] != model_sha256:
            raise OutputError(
                f"{path}: holds results of another model (sha256 {str(record['model_sha256'])[:12]}"
                f"..., this model {model_sha256[:12]}...); resume with that model, or choose "
                "another --output"
            )
        if record["error"] is None and isinstance(record["path"], str):
            kept.append(line)
            keys.add(input_key(record["path"]))
    return kept, frozenset(keys)


class JsonlJournal:
    """The journal of one run's JSONL output (see the module docstring)."""

    def __init__(self, output: Path, model_sha256: str, resume: bool) -> None:
        self.output = output
        self.journal = journal_path(output)
        self._where: Destination = destination(output)
        destination(self.journal)  # a folder or a protected file there is refused as well
        self.finished: frozenset[str] = frozenset()
        kept: list[str] = []
        if resume:
            source = self.journal if self.journal.exists() else output
            if source.exists():
                kept, self.finished = read_finished(source, model_sha256)
        self.resumed = len(kept)
        self._handle: IO[str] = self._open(kept)
        self._synced = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if time.monotonic() - self._synced >= FSYNC_SECONDS:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def commit(self) -> None:
        """Make the journal the output (the run ended, also by Ctrl-C or SIGTERM)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        replace_into(str(self.journal), self._where)

    def abandon(self) -> None:
        """Close after an output fault; the journal keeps every record written so far."""
        # A full disk fails the close's flush too; what reached the file stays.
        with contextlib.suppress(OSError):
            self._handle.close()

    def _open(self, kept: Iterable[str]) -> IO[str]:
        handle = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 - closed by commit
        try:
            os.chmod(self.journal, self._where.mode_bits)
            for line in kept:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            raise
        return handle


def _foreign(path: Path, why: str) -> OutputError:
    return OutputError(
        f"{path}: {why}; --resume continues only files btxrd-run wrote. Choose another --output, "
        "or run without --resume to replace it"
    )
