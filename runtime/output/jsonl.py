"""JSON-lines results that survive the process: Ctrl-C, SIGTERM, SIGKILL or a power cut.

Records stream into a journal beside the output, ``OUT.partial``: each line is written whole and
flushed, and the journal is fsynced at least every ``FSYNC_SECONDS``, so a killed run leaves every
finished record on disk (a power cut loses at most the last seconds). When the run ends, also by
Ctrl-C or SIGTERM, the journal is fsynced and renamed over ``OUT``; until then a previous ``OUT``
stays as it was. ``--resume`` continues the journal of an unfinished run, or else ``OUT``, and
only when every record there was written by btxrd-run for the same model file; of those it keeps
only what it can prove a fresh run would write (``read_finished``), and classifies the rest again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from btxrd.runtime.errors import OutputError
from btxrd.runtime.output.atomic import Destination, cannot_write, destination, replace_into
from btxrd.runtime.text import name_bytes

JOURNAL_SUFFIX = ".partial"
FSYNC_SECONDS = 2.0
# The fields every btxrd-run JSONL record carries; a line without them is not ours.
RECORD_FIELDS = ("image_name", "prediction", "scores", "path", "error", "model_sha256")


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + JOURNAL_SUFFIX)


def input_key(path: str | Path) -> str:
    """How an input is recognised across runs: the name given, made absolute and normalised
    (``a.png``, ``./a.png`` and ``/data/a.png`` are one input), not resolved: two names of one
    file (a symlink beside its target) are two inputs, each with a record of its own."""
    return os.path.abspath(os.fspath(path))


def record_key(record: Mapping[str, Any]) -> InputKey:
    """The key of the input a record is about: its name (unescaped, see ``text.name_text``) and
    display name, which tells apart two occurrences of one name in the input list."""
    raw = name_bytes(record["path"], bool(record.get("path_escaped")))
    return input_key(os.fsdecode(raw)), record.get("display_name")


def identity(path: str | Path) -> dict[str, int] | None:
    """An input file's size and mtime as a record stores them; None when it cannot be looked at."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


# (input_key, display name): one per position in the input list.
InputKey = tuple[str, Any]


@dataclass
class Resumed:
    """What ``--resume`` keeps of an earlier file, and what it does not and why."""

    lines: list[str] = field(default_factory=list)
    finished: set[InputKey] = field(default_factory=set)
    changed: list[str] = field(default_factory=list)  # inputs whose file changed since
    other_settings: int = 0  # records made with other settings that change a result
    unproven: int = (
        0  # records of an older btxrd: without the input's identity or in an older layout
    )
    not_inputs: int = 0  # records of names that are not inputs of this run
    duplicates: int = 0


def read_finished(
    path: Path,
    model_sha256: str,
    expected: Mapping[InputKey, dict[str, int] | None],
    settings: Mapping[str, Any],
    schema_version: int | None = None,
) -> Resumed:
    """The records of ``path`` that are proven to be what this run would write, by key.

    A record is kept when it is about an input of this run (``expected``: each input's key and
    current identity), that input's file has the size and mtime it had when it was read, it was
    made with the same ``settings`` in this release's record layout (``schema_version``: the
    results schema), and no earlier line holds that input. Records of failed
    inputs are dropped (they run again), as is a last line cut by a kill. A line that is not a
    btxrd-run record, or a record of another model, is an ``OutputError``: resuming onto it
    would mix results that do not belong together.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _foreign(path, "it is not UTF-8 text") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot read it to resume ({exc.strerror or exc})") from None
    lines = text.split("\n")
    resumed = Resumed()
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
            _keep_if_proven(record, line, expected, settings, schema_version, resumed)
    return resumed


def _keep_if_proven(
    record: dict[str, Any],
    line: str,
    expected: Mapping[InputKey, dict[str, int] | None],
    settings: Mapping[str, Any],
    schema_version: int | None,
    resumed: Resumed,
) -> None:
    key = record_key(record)
    if key not in expected:
        resumed.not_inputs += 1
    elif key in resumed.finished:
        resumed.duplicates += 1
    elif "input" not in record or "settings" not in record:
        resumed.unproven += 1
    elif record.get("schema_version") != schema_version:
        resumed.unproven += 1  # an older record layout: classified again, so every line is alike
    elif record["settings"] != settings:
        resumed.other_settings += 1
    elif expected[key] is None or record["input"] != expected[key]:
        resumed.changed.append(record["path"])
    else:
        resumed.lines.append(line)
        resumed.finished.add(key)


class JsonlJournal:
    """The journal of one run's JSONL output (see the module docstring)."""

    def __init__(
        self,
        output: Path,
        model_sha256: str,
        resume: bool,
        expected: Mapping[InputKey, dict[str, int] | None] | None = None,
        settings: Mapping[str, Any] | None = None,
        schema_version: int | None = None,
    ) -> None:
        self.output = output
        self.journal = journal_path(output)
        self._where: Destination = destination(output)
        destination(self.journal)  # a folder or a protected file there is refused as well
        self.resumed = Resumed()
        if resume:
            source = self.journal if self.journal.exists() else output
            if source.exists():
                self.resumed = read_finished(
                    source, model_sha256, expected or {}, settings or {}, schema_version
                )
        self._handle: IO[str] = self._open(self.resumed.lines)
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
        try:
            handle = open(self.journal, "w", encoding="utf-8")  # noqa: SIM115 - closed by commit
        except OSError as exc:
            raise OutputError(f"{self.journal}: {cannot_write(exc)}") from None
        try:
            os.chmod(self.journal, self._where.mode_bits)
            for line in kept:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                handle.close()
            raise OutputError(
                f"{self.journal}: {cannot_write(exc)}; {self.output} is unchanged"
            ) from None
        except BaseException:
            handle.close()
            raise
        return handle


def _foreign(path: Path, why: str) -> OutputError:
    return OutputError(
        f"{path}: {why}; --resume continues only files btxrd-run wrote. Choose another --output, "
        "or run without --resume to replace it"
    )
