"""``btxrd-run --parquet``: classify inputs shard by shard into a Parquet dataset folder.

The local engine classifies the shards one after another in this process; the Ray engine hands
them to a cluster. Either way each finished shard's part file is written here, atomically, as
soon as its rows are in, and an interrupted or killed run is finished with ``--resume``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from btxrd.runtime.engine.manifest import Dataset, Shard, list_entries, require_pyarrow
from btxrd.runtime.errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    OutputError,
)
from btxrd.runtime.output.progress import progress
from btxrd.runtime.text import for_terminal, plural

ENGINES = ("local", "ray")
_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class ShardedRun:
    """What a sharded run was asked to do."""

    output: Path
    engine: str = "local"
    resume: bool = False
    shard_size: int = 256
    ray_address: str = ""
    ray_cpus_per_worker: int = 1
    quiet: bool = False


def run_sharded(
    classifier: Any,
    paths: Sequence[Path],
    problems: Sequence[tuple[Path, str]],
    folder: Path | None,
    run: ShardedRun,
) -> int:
    """Classify ``paths`` (and record ``problems``) into ``run.output``; the exit code."""
    from btxrd.runtime.decode.inputs import display_names
    from btxrd.runtime.engine.rows import extra_fields

    if run.engine not in ENGINES:
        raise ConfigError(f"scale.engine {run.engine!r} is not one of {', '.join(ENGINES)}")
    require_pyarrow()
    if run.engine == "ray":
        from btxrd.runtime.engine.ray_engine import require_ray

        require_ray()
    entries = list_entries(paths, problems, display_names(list(paths), folder))
    dataset = Dataset(
        run.output,
        entries,
        classifier.info.sha256,
        run.shard_size,
        run.resume,
        classifier.result_settings(),
    )
    todo = dataset.todo
    if not run.quiet and dataset.resumed:
        _say_what_was_resumed(dataset, run.output)
    extra = extra_fields(classifier)
    started = time.perf_counter()
    done = 0
    try:
        # closing: the engine (Ray) shuts down before its output goes back to the terminal.
        with (
            _engine_output(run),
            contextlib.closing(_finished_shards(classifier, todo, extra, dataset, run)) as finished,
        ):
            bar = progress(finished, len(todo), "classifying", "shard", not run.quiet)
            for shard, table in bar:
                _check_model(table, classifier.info.sha256, run.output)
                dataset.write_part(shard, table)
                done += len(shard.entries)
    except KeyboardInterrupt:
        _notice(
            f"btxrd-run: interrupted; {len(dataset.finished) + _parts_written(dataset)} of "
            f"{plural(len(dataset.shards), 'shard')} are saved in {run.output}: rerun with "
            "--resume to finish"
        )
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - started
    summary = _summarise(dataset, len(entries))
    summary["wall_seconds"] = round(seconds, 3)
    dataset.complete(summary)
    _report_errors(dataset)
    if not run.quiet:
        if done:
            _notice(
                f"speed: {plural(done, 'input')} in {seconds:.2f} s ({done / seconds:.1f}/s, "
                f"engine {run.engine})"
            )
        _notice(
            f"wrote {plural(len(entries), 'row')} in {plural(len(dataset.shards), 'part file')} "
            f"to {run.output}/ ({summary['classified']} classified, {summary['failed']} failed)"
        )
    return EXIT_INPUT if summary["failed"] else EXIT_OK


_NAMED = 5  # changed inputs named one by one on resume; the rest are counted


def _say_what_was_resumed(dataset: Dataset, output: Path) -> None:
    retried = sum(len(s.entries) for s in dataset.retried.values()) - len(dataset.changed)
    again = f"; trying {plural(retried, 'failed input')} again" if retried else ""
    _notice(
        f"resuming: {len(dataset.finished)} of {plural(len(dataset.shards), 'shard')} "
        f"already in {output}{again}"
    )
    for name in dataset.changed[:_NAMED]:
        _notice(f"resuming: {for_terminal(name)} changed since it was classified; classified again")
    if len(dataset.changed) > _NAMED:
        _notice(f"resuming: ... and {len(dataset.changed) - _NAMED} more changed inputs")


def _finished_shards(
    classifier: Any, todo: list[Shard], extra: list[str], dataset: Dataset, run: ShardedRun
) -> Generator[tuple[Shard, Any], None, None]:
    """Each unfinished shard with its rows, as soon as they are all in."""
    from btxrd.runtime.engine.rows import classify_shard

    if run.engine == "local":
        for shard in todo:
            yield shard, classify_shard(classifier, shard, extra)
        return
    from btxrd.runtime.engine.ray_engine import classify_on_ray

    pa = require_pyarrow()
    size = len(dataset.shards[0].entries)  # every shard but the last holds exactly this many
    # By the index of the shard's first input (a retried shard holds only some of its inputs).
    by_first = {s.index * size: s for s in todo}
    pending: dict[int, list[Any]] = {}
    blocks = classify_on_ray(
        classifier,
        todo,
        extra,
        address=run.ray_address,
        cpus_per_worker=run.ray_cpus_per_worker,
        on_lost=lambda what: _cluster_lost(what, dataset, run.output),
    )
    for block in blocks:
        index = block.column("input_index").to_pylist()
        for first in sorted({i - i % size for i in index}):
            shard = by_first.get(first)
            if shard is None:
                continue  # a shard already written (a retried task's second answer)
            mask = [first <= i < first + size for i in index]
            pending.setdefault(first, []).append(block.filter(pa.array(mask)))
            rows = sum(t.num_rows for t in pending[first])
            if rows >= len(shard.entries):
                table = pa.concat_tables(pending.pop(first)).sort_by("input_index")
                del by_first[first]
                yield shard, table


def _cluster_lost(what: str, dataset: Dataset, output: Path) -> None:
    """End the process (from the head watch's thread: the main thread may be stuck in Ray)
    with one line; every part file written so far is whole, so ``--resume`` finishes the run."""
    saved = len(dataset.finished) + _parts_written(dataset)
    click.echo(
        f"btxrd-run: error: {what}; {saved} of {plural(len(dataset.shards), 'shard')} are saved "
        f"in {output}: start the cluster again and rerun with --resume to finish",
        err=True,
    )
    sys.stderr.flush()
    os._exit(EXIT_USAGE)


def _engine_output(run: ShardedRun) -> contextlib.AbstractContextManager[None]:
    """Where the engine's own output goes: Ray's to a log in the output folder."""
    if run.engine != "ray":
        return contextlib.nullcontext()
    from btxrd.runtime.engine.ray_engine import LOG_FILE, ray_output_to

    return ray_output_to(run.output / LOG_FILE)


def _check_model(table: Any, sha256: str, output: Path) -> None:
    """Every row was computed by this model (a worker could have found another file at the
    model's path)."""
    seen = set(table.column("model_sha256").to_pylist())
    if seen != {sha256}:
        other = next(iter(seen - {sha256}), None)
        raise OutputError(
            f"{output}: a worker classified with another model file (sha256 {str(other)[:12]}..., "
            f"this model {sha256[:12]}...); put the same model at the same path on every machine"
        )


def _parts_written(dataset: Dataset) -> int:
    from btxrd.runtime.engine.manifest import part_name

    return sum(
        1
        for s in dataset.shards
        if s.index not in dataset.finished and (dataset.folder / part_name(s.index)).is_file()
    )


def _summarise(dataset: Dataset, inputs: int) -> dict[str, Any]:
    """Counts over every part file, after checking each input has exactly one row."""
    table = dataset.read_column("input_index", "prediction", "error", "in_distribution")
    indices = [] if table is None else table.column("input_index").to_pylist()
    if sorted(indices) != list(range(inputs)):
        raise OutputError(
            f"{dataset.folder}: the part files hold {len(indices)} rows for {inputs} inputs; "
            "remove the folder and rerun (a btxrd bug: report it)"
        )
    predictions = [] if table is None else table.column("prediction").to_pylist()
    errors = [] if table is None else table.column("error").to_pylist()
    verdicts = [] if table is None else table.column("in_distribution").to_pylist()
    per_class: dict[str, int] = {}
    for p in predictions:
        if p is not None:
            per_class[p] = per_class.get(p, 0) + 1
    failed = sum(e is not None for e in errors)
    refused = sum(e is not None and v is False for e, v in zip(errors, verdicts, strict=True))
    return {
        "inputs": inputs,
        "classified": inputs - failed,
        "failed": failed,
        "refused_out_of_distribution": refused,
        "per_class": per_class,
    }


def _report_errors(dataset: Dataset) -> None:
    table = dataset.read_column("error", "in_distribution")
    if table is None:
        return
    errors = [
        (e, v)
        for e, v in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
        if e is not None
    ]
    for error, verdict in errors[:_ERRORS_SHOWN]:
        kind = "not classified" if verdict is False else "error"
        click.echo(f"btxrd-run: {kind}: {for_terminal(error)}", err=True)
    if len(errors) > _ERRORS_SHOWN:
        click.echo(
            f"btxrd-run: ... and {len(errors) - _ERRORS_SHOWN} more (the error column of "
            f"{dataset.folder})",
            err=True,
        )


def _notice(text: str) -> None:
    click.echo(text, err=True)
