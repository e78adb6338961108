"""The inputs of a sharded run and the folder its results go to.

A run lists its inputs once, in ``btxrd-run --dir`` order, with each file's size and mtime: the
manifest. Consecutive runs of ``shard_size`` inputs are its shards; shard ``i`` is finished when
``part-{i:06d}.parquet`` exists, written under a temporary name and renamed. The folder also
holds ``_btxrd_manifest.arrow`` (Arrow IPC) and ``_btxrd_run.json`` (a run id, model sha256,
shard size, the settings that change a result, the digest of the input names).

``--resume`` continues only a run of the same model on the same input names, and keeps only what
it can prove a fresh run would write. Each part carries the run id, its shard index, the shard
size and the settings in its Parquet metadata; each row its input's index, name, the model's
sha256 and the file's size, mtime and sha256. A part whose metadata or rows do not match is
redone whole; in a matching part, the inputs whose rows hold an error, or whose file changed
since (size or mtime, and then its sha256), are redone and the part is rewritten, atomically,
with the new rows in their place, so no row is ever written twice. A part of another run (or of
none) is refused; an extra part of this run beyond its last shard is removed.

Readers (pyarrow, pandas, polars) skip files that start with ``_`` or ``.``; ``*.parquet``
(DuckDB) matches the parts only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btxrd.runtime.errors import ConfigError, OutputError
from btxrd.runtime.install import install_hint
from btxrd.runtime.output.atomic import AtomicFile, fix_for, write_text
from btxrd.runtime.output.folders import prepare_output_dir

RUN_FILE = "_btxrd_run.json"
LOG_FILE = "_btxrd_ray.log"  # what Ray printed during a run (``ray_engine``)
MANIFEST_FILE = "_btxrd_manifest.arrow"  # not .parquet: readers glob *.parquet
DATASET_FORMAT = "btxrd-parquet-dataset/2"
PART_METADATA_KEY = b"btxrd"  # a part's Parquet metadata: run id, shard, shard size, settings
_PART_NAME = re.compile(r"part-(\d{6})\.parquet")


def require_pyarrow() -> Any:
    """``pyarrow`` with its Parquet module, or one line saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            f"Parquet output needs pyarrow, which is not installed: {install_hint('parquet')} "
            "(or choose --jsonl or --csv)"
        ) from None
    return pyarrow


def part_name(shard: int) -> str:
    return f"part-{shard:06d}.parquet"


@dataclass(frozen=True)
class Entry:
    """One input as the manifest lists it; ``problem`` is set for what could not be looked at
    (an unreadable sub-folder), which gets its error row like any input."""

    index: int
    path: Path  # as given (relative to where btxrd-run runs, or absolute)
    display_name: str
    size: int | None
    mtime_ns: int | None
    problem: str | None = None


@dataclass(frozen=True)
class Shard:
    index: int
    entries: tuple[Entry, ...]


def list_entries(
    paths: Sequence[Path], problems: Sequence[tuple[Path, str]], display: Sequence[str]
) -> list[Entry]:
    """The manifest of a run: every input file with its size and mtime, then what could not be
    looked at (``display`` holds the inputs' display names, in order)."""
    entries = []
    for i, (path, name) in enumerate(zip(paths, display, strict=True)):
        size: int | None
        mtime: int | None
        try:
            info = os.stat(path)
            size, mtime = info.st_size, info.st_mtime_ns
        except OSError:
            size = mtime = None  # the classifier names the cause in the row
        entries.append(Entry(i, path, name, size, mtime))
    for j, (path, message) in enumerate(problems, start=len(entries)):
        entries.append(Entry(j, path, str(path), None, None, message))
    return entries


def shards_of(entries: Sequence[Entry], shard_size: int) -> list[Shard]:
    return [
        Shard(i // shard_size, tuple(entries[i : i + shard_size]))
        for i in range(0, len(entries), shard_size)
    ]


def input_digest(entries: Sequence[Entry]) -> str:
    """What identifies the input set: every path (as bytes), and whether it could be looked at,
    in order. Not the files' contents: a file changed since is redone, not a reason to refuse."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(os.fsencode(e.path) + b"\0" + (b"problem" if e.problem else b""))
        digest.update(b"\n")
    return digest.hexdigest()


class Dataset:
    """The output folder of one sharded run (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        entries: Sequence[Entry],
        model_sha256: str,
        shard_size: int,
        resume: bool,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.run_file = folder / RUN_FILE
        self.model_sha256 = model_sha256
        self.settings = dict(settings or {})
        digest = input_digest(entries)
        previous = self._previous_run(resume)
        if previous is not None:
            self._check_same_run(previous, model_sha256, digest, entries)
            shard_size = int(previous["shard_size"])
        self.shards = shards_of(entries, shard_size)
        # Shards whose part file is proven in place, and those of them with inputs to redo.
        self.finished: frozenset[int] = frozenset()
        self.retried: dict[int, Shard] = {}
        self.changed: list[str] = []  # inputs whose file changed since their row was written
        if previous is not None:
            self._run = {**previous, "settings": self.settings, "complete": False}
            self._remove_temporaries()
            self._remove_stale_parts()
            self._prove_parts()
            self._save_run()
        else:
            prepare_output_dir(folder)
            self._remove_temporaries()
            self._write_manifest(entries)
            self._run = {
                "format": DATASET_FORMAT,
                "run_id": uuid.uuid4().hex,
                "model_sha256": model_sha256,
                "inputs": len(entries),
                "input_digest": digest,
                "shard_size": shard_size,
                "shards": len(self.shards),
                "settings": self.settings,
                "complete": False,
            }
            self._save_run()
        self.resumed = previous is not None

    @property
    def todo(self) -> list[Shard]:
        """What is left to classify: whole shards, and the failed inputs of finished ones."""
        return [
            self.retried.get(s.index, s)
            for s in self.shards
            if s.index not in self.finished or s.index in self.retried
        ]

    def write_part(self, shard: Shard, table: Any) -> None:
        """Write one shard's rows: a temporary file in the folder, fsynced, renamed into place.
        The rows of a retried shard's inputs replace theirs in its part file."""
        pyarrow = require_pyarrow()
        if table.num_rows != len(shard.entries):
            raise OutputError(
                f"{self.folder}: shard {shard.index} came back with {table.num_rows} rows for "
                f"{len(shard.entries)} inputs; nothing of it was written (a btxrd bug: report it)"
            )
        path = self.folder / part_name(shard.index)
        if shard.index in self.retried:
            table = self._merged(path, table)
            if table.num_rows != len(self.shards[shard.index].entries):
                raise OutputError(
                    f"{path}: retrying its failed inputs gave {table.num_rows} rows for "
                    f"{len(self.shards[shard.index].entries)} inputs; the part was left as it was "
                    "(a btxrd bug: report it)"
                )
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), PART_METADATA_KEY: self._part_identity(shard.index)}
        )
        try:
            file = AtomicFile(path, "wb")
            try:
                pyarrow.parquet.write_table(table, file.handle)
            except BaseException:
                file.abort()
                raise
            file.commit()
        except OSError as exc:
            raise OutputError(
                f"{path}: cannot write this part ({exc.strerror or exc}); every finished part is "
                f"kept. {fix_for(exc)} and rerun with --resume"
            ) from None

    def complete(self, summary: dict[str, Any]) -> None:
        """Mark the run finished, once every input has exactly one row."""
        self._run = {**self._run, "complete": True, "summary": summary}
        self._save_run()

    def read_column(self, *columns: str) -> Any:
        """Those columns of every part file, as one pyarrow table (manifest order)."""
        pyarrow = require_pyarrow()
        tables = [
            pyarrow.parquet.read_table(self.folder / part_name(s.index), columns=list(columns))
            for s in self.shards
        ]
        return pyarrow.concat_tables(tables) if tables else None

    # Internals

    def _previous_run(self, resume: bool) -> dict[str, Any] | None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"{folder}: is a file; Parquet results are a folder of part files: choose a "
                "folder name for --output"
            )
        if not folder.is_dir():
            return None
        if self.run_file.is_file():
            if not resume and not any(folder.glob("part-*.parquet")):
                return None  # a run that wrote nothing (Ray unreachable, say): start afresh
            if not resume:
                raise OutputError(
                    f"{folder}: already holds a btxrd Parquet run; add --resume to finish it, or "
                    "choose another --output"
                )
            try:
                run = json.loads(self.run_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise OutputError(
                    f"{self.run_file}: cannot read it to resume ({exc}); choose another --output"
                ) from None
            if not isinstance(run, dict) or not str(run.get("format")).startswith(
                DATASET_FORMAT.split("/")[0]
            ):
                raise OutputError(f"{self.run_file}: not a btxrd run file; choose another --output")
            return run
        if any(p.name != LOG_FILE for p in folder.iterdir()):
            raise OutputError(
                f"{folder}: is a folder that is not empty and holds no btxrd run; choose a new "
                "or empty folder for --output"
            )
        return None

    def _check_same_run(
        self, run: dict[str, Any], model_sha256: str, digest: str, entries: Sequence[Entry]
    ) -> None:
        if run.get("format") != DATASET_FORMAT:
            raise OutputError(
                f"{self.folder}: was written by another btxrd version ({run.get('format')}); "
                "finish it with that version, or choose another --output"
            )
        if run.get("model_sha256") != model_sha256:
            raise OutputError(
                f"{self.folder}: holds results of another model (sha256 "
                f"{str(run.get('model_sha256'))[:12]}..., this model {model_sha256[:12]}...); "
                "resume with that model, or choose another --output"
            )
        if run.get("input_digest") != digest:
            raise OutputError(
                f"{self.folder}: was started on another input set ({run.get('inputs')} inputs "
                f"then, {len(entries)} now; {self._first_difference(entries)}); resume on the "
                "same inputs, or choose another --output"
            )

    def _first_difference(self, entries: Sequence[Entry]) -> str:
        """The first input that differs between the manifest and ``entries``, in words."""
        from pyarrow import feather

        try:
            then = feather.read_table(self.folder / MANIFEST_FILE).column("path").to_pylist()
        except (OSError, KeyError, ValueError) as exc:
            return f"its manifest cannot be read: {exc}"
        now = [os.fsencode(e.path) for e in entries]
        for old, new in zip(then, now, strict=False):
            if old != new:
                return f"first difference: {_shown(old)} then, {_shown(new)} now"
        if len(then) > len(now):
            return f"first missing now: {_shown(then[len(now)])}"
        if len(now) > len(then):
            return f"first new: {_shown(now[len(then)])}"
        return "an input that could be looked at then cannot now, or the reverse"

    def _part_identity(self, shard: int) -> bytes:
        return json.dumps(
            {
                "run_id": self._run["run_id"],
                "shard": shard,
                "shard_size": self._run["shard_size"],
                "settings": self.settings,
            },
            sort_keys=True,
        ).encode()

    def _remove_stale_parts(self) -> None:
        """Every ``*.parquet`` beside the parts is refused unless it is a part of this run beyond
        its last shard (a run file edited to fewer shards), which is removed: readers would
        count its rows."""
        expected = {part_name(s.index) for s in self.shards}
        for path in sorted(self.folder.glob("*.parquet")):
            if path.name in expected:
                continue
            if _PART_NAME.fullmatch(path.name) and self._identity_of(path) is not None:
                path.unlink(missing_ok=True)
                continue
            raise _not_of_this_run(path, self.folder)

    def _identity_of(self, path: Path) -> dict[str, Any] | None:
        """A part's metadata when this run wrote it; None for a part of another run or none."""
        pyarrow = require_pyarrow()
        try:
            metadata = pyarrow.parquet.read_schema(path).metadata or {}
            identity = json.loads(metadata[PART_METADATA_KEY])
        except (OSError, pyarrow.ArrowException, KeyError, ValueError):
            return None
        if not isinstance(identity, dict) or identity.get("run_id") != self._run["run_id"]:
            return None
        return identity

    def _prove_parts(self) -> None:
        """Which shards' parts are kept, and which of their inputs are redone (module docstring)."""
        finished = set()
        for shard in self.shards:
            path = self.folder / part_name(shard.index)
            if not path.is_file():
                continue
            if not _readable_part(path):
                continue  # a damaged part: redone, and replaced by the rename
            identity = self._identity_of(path)
            if identity is None:
                raise _not_of_this_run(path, self.folder)
            wanted = {"shard": shard.index, "shard_size": self._run["shard_size"]}
            if any(identity.get(k) != v for k, v in wanted.items()):
                continue
            if identity.get("settings") != self.settings:
                continue
            redo = self._inputs_to_redo(path, shard)
            if redo is None:
                continue
            finished.add(shard.index)
            if redo:
                self.retried[shard.index] = Shard(shard.index, redo)
        self.finished = frozenset(finished)

    def _inputs_to_redo(self, path: Path, shard: Shard) -> tuple[Entry, ...] | None:
        """The inputs of a kept part to classify again (failed, or changed since), or None when
        its rows are not exactly this shard's inputs by this model."""
        from btxrd.runtime.engine.rows import file_facts
        from btxrd.runtime.text import name_bytes

        pyarrow = require_pyarrow()
        columns = ["input_index", "path", "path_escaped", "model_sha256", "error"]
        columns += ["file_size", "file_mtime_ns", "file_sha256"]
        try:
            rows = pyarrow.parquet.read_table(path, columns=columns).to_pylist()
        except (OSError, pyarrow.ArrowException, KeyError):
            return None
        if [r["input_index"] for r in rows] != [e.index for e in shard.entries]:
            return None
        redo = []
        for row, entry in zip(rows, shard.entries, strict=True):
            if row["model_sha256"] != self.model_sha256 or not isinstance(row["path"], str):
                return None
            if name_bytes(row["path"], bool(row["path_escaped"])) != os.fsencode(entry.path):
                return None
            if row["error"] is not None:
                redo.append(entry)
                continue
            same = (row["file_size"], row["file_mtime_ns"]) == (entry.size, entry.mtime_ns)
            if same:
                continue
            # Touched (mtime) but perhaps not changed: the sha256 decides.
            if row["file_size"] == entry.size and file_facts(entry.path)[1] == row["file_sha256"]:
                continue
            self.changed.append(row["path"])
            redo.append(entry)
        return tuple(redo)

    def _merged(self, path: Path, new_rows: Any) -> Any:
        """A finished part's rows with those of its retried inputs replaced by ``new_rows``."""
        pyarrow = require_pyarrow()
        from pyarrow import compute

        old = pyarrow.parquet.read_table(path, schema=new_rows.schema)
        redone = compute.is_in(old.column("input_index"), value_set=new_rows["input_index"])
        kept = old.filter(compute.invert(redone))
        return pyarrow.concat_tables([kept, new_rows]).sort_by("input_index")

    def _remove_temporaries(self) -> None:
        """Temporary part files a killed run left (``.part-*.tmp``, from ``AtomicFile``)."""
        for leftover in self.folder.glob(".part-*.tmp"):
            leftover.unlink(missing_ok=True)

    def _write_manifest(self, entries: Sequence[Entry]) -> None:
        pyarrow = require_pyarrow()
        from pyarrow import feather

        table = pyarrow.table(
            {
                "input_index": pyarrow.array([e.index for e in entries], pyarrow.int64()),
                "path": pyarrow.array([os.fsencode(e.path) for e in entries], pyarrow.binary()),
                "size": pyarrow.array([e.size for e in entries], pyarrow.int64()),
                "mtime_ns": pyarrow.array([e.mtime_ns for e in entries], pyarrow.int64()),
            }
        )
        file = AtomicFile(self.folder / MANIFEST_FILE, "wb")
        try:
            feather.write_feather(table, file.handle)
        except BaseException:
            file.abort()
            raise
        file.commit()

    def _save_run(self) -> None:
        write_text(self.run_file, json.dumps(self._run, indent=2) + "\n")


def _readable_part(path: Path) -> bool:
    pyarrow = require_pyarrow()
    try:
        pyarrow.parquet.read_metadata(path)
    except (OSError, pyarrow.ArrowException):
        return False
    return True


def _not_of_this_run(path: Path, folder: Path) -> OutputError:
    return OutputError(
        f"{path}: is not a part of the run in {folder} (another run wrote it, or it was copied "
        "in); move it out of the folder and rerun with --resume, or choose another --output"
    )


def _shown(raw: bytes) -> str:
    from btxrd.runtime.text import for_terminal, text_of

    return for_terminal(text_of(os.fsdecode(raw)))
