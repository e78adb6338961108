"""The inputs of a sharded run and the folder its results go to.

A run lists its inputs once, in ``btxrd-run --dir`` order, with each file's size and mtime: the
manifest. Consecutive runs of ``shard_size`` inputs are its shards; shard ``i`` is finished when
``part-{i:06d}.parquet`` exists, written under a temporary name and renamed. The folder also
holds ``_btxrd_manifest.arrow`` (Arrow IPC) and ``_btxrd_run.json`` (model sha256, shard size,
the input set's digest): ``--resume`` continues only a run of the same model on the same inputs; it
redoes the shards without a part file and, in the others, only the inputs whose rows hold an error
(their part is rewritten, atomically, with the new rows in their place), so no row is ever written
twice. Readers (pyarrow, pandas, polars) skip files that start with ``_`` or ``.``;
``*.parquet`` (DuckDB) matches the parts only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btxrd.runtime.atomic import AtomicFile, write_text
from btxrd.runtime.cliutil import prepare_output_dir
from btxrd.runtime.errors import ConfigError, OutputError
from btxrd.runtime.install import install_hint

RUN_FILE = "_btxrd_run.json"
LOG_FILE = "_btxrd_ray.log"  # what Ray printed during a run (``ray_engine``)
MANIFEST_FILE = "_btxrd_manifest.arrow"  # not .parquet: readers glob *.parquet
DATASET_FORMAT = "btxrd-parquet-dataset/1"


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
    """What identifies the input set: every path (as bytes), size, mtime and problem, in order."""
    digest = hashlib.sha256()
    for e in entries:
        fields = (os.fsencode(e.path), str(e.size).encode(), str(e.mtime_ns).encode())
        digest.update(b"\0".join((*fields, (e.problem or "").encode("utf-8", "replace"))))
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
    ) -> None:
        self.folder = folder
        self.run_file = folder / RUN_FILE
        digest = input_digest(entries)
        previous = self._previous_run(resume)
        if previous is not None:
            self._check_same_run(previous, model_sha256, digest, len(entries))
            shard_size = int(previous["shard_size"])
        self.shards = shards_of(entries, shard_size)
        # Shards whose part file is in place, and those of them with inputs to try again.
        self.finished: frozenset[int] = frozenset()
        self.retried: dict[int, Shard] = {}
        if previous is not None:
            self._remove_temporaries()
            self.finished = frozenset(s.index for s in self.shards if self._is_finished(s))
            self.retried = self._failed_inputs(self.finished)
        else:
            prepare_output_dir(folder)
            self._remove_temporaries()
            self._write_manifest(entries)
            self._run = {
                "format": DATASET_FORMAT,
                "model_sha256": model_sha256,
                "inputs": len(entries),
                "input_digest": digest,
                "shard_size": shard_size,
                "shards": len(self.shards),
                "complete": False,
            }
            self._save_run()
        if previous is not None:
            self._run = previous
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
                "kept. Free some space and rerun with --resume"
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
            if not isinstance(run, dict) or run.get("format") != DATASET_FORMAT:
                raise OutputError(f"{self.run_file}: not a btxrd run file; choose another --output")
            return run
        if any(p.name != LOG_FILE for p in folder.iterdir()):
            raise OutputError(
                f"{folder}: is a folder that is not empty and holds no btxrd run; choose a new "
                "or empty folder for --output"
            )
        return None

    def _check_same_run(
        self, run: dict[str, Any], model_sha256: str, digest: str, count: int
    ) -> None:
        if run.get("model_sha256") != model_sha256:
            raise OutputError(
                f"{self.folder}: holds results of another model (sha256 "
                f"{str(run.get('model_sha256'))[:12]}..., this model {model_sha256[:12]}...); "
                "resume with that model, or choose another --output"
            )
        if run.get("input_digest") != digest:
            raise OutputError(
                f"{self.folder}: was started on another input set ({run.get('inputs')} inputs "
                f"then, {count} now, or files added, removed or changed since); resume on the "
                "same inputs, or choose another --output"
            )

    def _is_finished(self, shard: Shard) -> bool:
        pyarrow = require_pyarrow()
        path = self.folder / part_name(shard.index)
        if not path.is_file():
            return False
        try:
            return bool(pyarrow.parquet.read_metadata(path).num_rows == len(shard.entries))
        except (OSError, pyarrow.ArrowException):
            return False  # redone, and replaced by the rename

    def _failed_inputs(self, finished: frozenset[int]) -> dict[int, Shard]:
        """For each finished shard with error rows, a shard of just those inputs."""
        pyarrow = require_pyarrow()
        retried = {}
        for shard in self.shards:
            if shard.index not in finished:
                continue
            path = self.folder / part_name(shard.index)
            rows = pyarrow.parquet.read_table(path, columns=["input_index", "error"])
            failed = set(rows.filter(rows["error"].is_valid())["input_index"].to_pylist())
            if failed:
                entries = tuple(e for e in shard.entries if e.index in failed)
                retried[shard.index] = Shard(shard.index, entries)
        return retried

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
