"""Where results go: a human table, one JSON document, streamed JSON lines, or CSV.

Every input gets exactly one record, in input order, failures included. Output files are
atomic: JSON and CSV are written whole at the end, JSONL streams into a temporary file renamed
over the target when the run ends (interrupted or not); only ``--resume`` appends in place.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from btxrd.runtime.errors import OutputError
from btxrd.runtime.model.verdict import is_refusal
from btxrd.runtime.output.atomic import AtomicFile, destination, fix_for, write_text
from btxrd.runtime.output.jsonl import InputKey, JsonlJournal, Resumed, input_key
from btxrd.runtime.text import for_terminal, text_of

if TYPE_CHECKING:  # the CLI imports this module for its flags; onnxruntime loads only to classify
    from btxrd.runtime.model.classifier import Prediction
    from btxrd.runtime.model.session import ModelInfo

# 2 since 2026-12-07: refused inputs carry no class probability (``btxrd.runtime.model.verdict``).
RESULTS_SCHEMA_VERSION = 3


class Sink:
    """Base: collects records; subclasses decide when and where they are written.

    ``suffix`` is the file suffix that selects this writer for ``--output FILE`` without a
    format flag, ``help`` the flag's help; ``resumed`` what a resumed file already holds.
    """

    suffix: str | None = None
    help = ""

    def __init__(self, info: ModelInfo, output: Path | None) -> None:
        self.info = info
        self.output = output
        self.records: list[dict[str, Any]] = []
        self.resumed: Resumed | None = None

    def add(
        self, prediction: Prediction, display_name: str | None = None, source: Path | None = None
    ) -> None:
        self.records.append(record_of(prediction, display_name))

    def already_recorded(self, key: InputKey) -> bool:
        """Whether a resumed file already holds the result of the input ``key`` names."""
        return self.resumed is not None and key in self.resumed.finished

    def close(self, summary: dict[str, Any]) -> None:
        """Write what was collected (also called after an interruption)."""

    def _write_output(self, text: str) -> None:
        """The whole result, to ``--output`` (atomically) or to stdout."""
        try:
            if self.output is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                write_text(self.output, text)
        except OSError as exc:
            fault = _stdout_fault(exc) if self.output is None else _cannot_write(self.output, exc)
            raise fault from None


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"{path}: cannot write the results ({exc.strerror or exc}); any previous file there "
        f"is unchanged. {fix_for(exc)}"
    )


def record_of(prediction: Prediction, display_name: str | None = None) -> dict[str, Any]:
    """The record of one input as every btxrd JSON holds it (``results.schema.json``):
    ``display_name`` tells apart two inputs that share a file name."""
    record = prediction.to_record()
    named = {"image_name": record.pop("image_name"), "display_name": None}
    named["display_name"] = text_of(display_name) if display_name else named["image_name"]
    return {**named, **record}


def jsonl_record(
    prediction: Prediction,
    display_name: str | None,
    info: ModelInfo,
    identity: dict[str, int] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """A line of a JSON-lines results file (``btxrd-run --jsonl -o``, the DICOM node's
    results.jsonl): the record, the model's sha256, the input file's ``identity`` (size and
    mtime when it was read), the ``settings`` that change a result and the results schema's
    version: what ``--resume`` checks before it keeps a line."""
    return {
        **record_of(prediction, display_name),
        "model_sha256": info.sha256,
        "input": identity,
        "settings": settings,
        "schema_version": RESULTS_SCHEMA_VERSION,
    }


def _stdout_fault(exc: OSError) -> BaseException:
    if isinstance(exc, BrokenPipeError):
        return exc  # the reader went away (`| head`): the command exits quietly
    return OutputError(f"stdout: cannot write the results ({exc.strerror or exc})")


class JsonSink(Sink):
    suffix = ".json"
    help = "One JSON document on stdout or --output."

    def close(self, summary: dict[str, Any]) -> None:
        document = results_document(model_block(self.info), self.records, summary)
        text = json.dumps(document, indent=2) + "\n"
        self._write_output(text)


class JsonlSink(Sink):
    """One record per line as results arrive, each line written and flushed whole.

    To a file, lines go through a journal (``btxrd.runtime.output.jsonl``) that a killed run leaves
    behind with every finished record, and that ``resume`` continues. Each line also carries
    the model's sha256, the input file's identity (``expected``, by ``jsonl.InputKey``), the
    ``settings`` that change a result and the results schema's version, which is what ``resume``
    checks before keeping it.
    """

    suffix = ".jsonl"
    help = "One JSON record per line as results arrive."

    def __init__(
        self,
        info: ModelInfo,
        output: Path | None,
        resume: bool = False,
        expected: Mapping[InputKey, dict[str, int] | None] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(info, output)
        self._expected = expected or {}
        self._settings = dict(settings or {})
        self._journal: JsonlJournal | None = None
        self._direct: AtomicFile | None = None
        if output is None:
            self._handle: IO[str] = sys.stdout
        elif destination(output).direct:  # a FIFO or device: no journal, no resume
            self._direct = AtomicFile(output)
            self._handle = self._direct.handle
        else:
            self._journal = JsonlJournal(
                output, info.sha256, resume, self._expected, self._settings, RESULTS_SCHEMA_VERSION
            )
            self.resumed = self._journal.resumed

    def add(
        self, prediction: Prediction, display_name: str | None = None, source: Path | None = None
    ) -> None:
        if self._journal is None:
            record = {**record_of(prediction, display_name), "model_sha256": self.info.sha256}
        else:
            shown = text_of(display_name) if display_name else prediction.image_name
            key = (input_key(source), shown) if source is not None else None
            record = jsonl_record(
                prediction,
                display_name,
                self.info,
                self._expected.get(key) if key else None,
                self._settings,
            )
        try:
            if self._journal is not None:
                self._journal.write(record)
            else:
                self._handle.write(json.dumps(record) + "\n")
                self._handle.flush()
        except OSError as exc:
            raise self._fault(exc) from None

    def close(self, summary: dict[str, Any]) -> None:
        try:
            if self._journal is not None:
                self._journal.commit()
            elif self._direct is not None:
                self._direct.commit()
        except OSError as exc:
            raise self._fault(exc) from None

    def _fault(self, exc: OSError) -> BaseException:
        if self.output is None:
            return _stdout_fault(exc)
        if self._journal is None:
            return _cannot_write(self.output, exc)
        self._journal.abandon()
        journal = self._journal.journal
        if journal.is_file():
            kept = f"every finished record is in {journal}. {fix_for(exc)} and rerun with --resume"
        else:
            kept = f"{journal}, which held the finished records, is gone. {fix_for(exc)} and rerun"
        cause = exc.strerror or exc
        return OutputError(f"{self.output}: cannot write the results ({cause}); {kept}")


class CsvSink(Sink):
    suffix = ".csv"
    help = "A CSV table."

    def close(self, summary: dict[str, Any]) -> None:
        names = list(self.info.class_names)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "image_name",
                "path",
                "path_escaped",
                "prediction",
                "confidence",
                *names,
                "ood_score",
                "in_distribution",
                "error",
            ]
        )
        for r in self.records:
            scores = [_fmt((r["scores"] or {}).get(n)) for n in names]
            ood = r.get("ood") or {}
            verdict = ood.get("in_distribution")
            writer.writerow(
                [
                    _cell(r["image_name"]),
                    _cell(r["path"]),
                    _flag(r.get("path_escaped") or False),
                    _cell(r["prediction"] or ""),
                    _fmt(r["confidence"]),
                    *scores,
                    _fmt(ood.get("score")),
                    "" if verdict is None else _flag(verdict),
                    _cell(r["error"] or ""),
                ]
            )
        self._write_output(buffer.getvalue())


def _row(line: str) -> None:
    """A table row on stdout. With a progress bar on the same terminal, tqdm clears the bar,
    prints the row and redraws the bar below it, so the two never share a line."""
    if sys.stderr.isatty() and sys.stdout.isatty():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
    else:
        click.echo(line)


class HumanSink(Sink):
    """A compact table on stdout, one row per image as it is classified."""

    def __init__(self, info: ModelInfo, output: Path | None) -> None:
        super().__init__(info, output)
        self._names = list(info.class_names)
        self._header_done = False

    def add(
        self, prediction: Prediction, display_name: str | None = None, source: Path | None = None
    ) -> None:
        super().add(prediction, display_name)
        if not self._header_done:
            cols = "".join(f"{n[:10]:>11}" for n in self._names)
            _row(f"{'image':<28} {'prediction':<12}{'conf':>6}{cols}")
            self._header_done = True
        name = _shorten(for_terminal(self.records[-1]["display_name"]), 28)
        if prediction.refused and prediction.ood is not None:
            _row(f"{name:<28} {'NOT CLASSIFIED':<18} {prediction.ood.describe()}")
            return
        if prediction.error is not None:
            _row(f"{name:<28} {'ERROR':<12} {for_terminal(prediction.error)}")
            return
        probs = "".join(f"{prediction.scores[n]:>11.4f}" for n in self._names)
        _row(f"{name:<28} {prediction.prediction:<12}{prediction.confidence:>6.3f}{probs}")

    def close(self, summary: dict[str, Any]) -> None:
        if len(self.records) > 1:
            counts = ", ".join(f"{n} {summary['per_class'].get(n, 0)}" for n in self._names)
            refused = summary["refused_out_of_distribution"]
            failed = summary["failed"] - refused
            failed = (f", {failed} failed" if failed else "") + (
                f", {refused} not classified (unlike the training images)" if refused else ""
            )
            _row(f"\n{summary['classified']} classified: {counts}{failed}")


class ParquetSink(Sink):
    """Named here for its flag and suffix only: Parquet results are a folder of part files,
    written shard by shard and resumable (``btxrd.runtime.engine``), never through a sink."""

    suffix = ".parquet"
    help = "A folder of Parquet part files, one row per input, resumable (extra [parquet])."


# The output formats, by the name of their command-line flag (``--json`` ...); "human" is the
# table a terminal gets when no format is chosen.
WRITERS: dict[str, type[Sink]] = {
    "json": JsonSink,
    "jsonl": JsonlSink,
    "csv": CsvSink,
    "parquet": ParquetSink,
}
HUMAN = "human"


def format_for_suffix(path: Path) -> str | None:
    """The format an ``--output`` file's suffix names (``.json``, ``.jsonl``, ``.csv``,
    ``.parquet``)."""
    by_suffix = {writer.suffix: name for name, writer in WRITERS.items()}
    return by_suffix.get(path.suffix.lower())


def make_sink(
    fmt: str,
    info: ModelInfo,
    output: Path | None,
    resume: bool = False,
    expected: Mapping[InputKey, dict[str, int] | None] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Sink:
    """The writer of ``fmt``; JSON lines get each input's identity (``expected``) and the
    ``settings`` that change a result, which ``resume`` checks records against."""
    if fmt == HUMAN:
        return HumanSink(info, output)
    if fmt == "parquet":  # resumed shard by shard (btxrd.runtime.engine), not here
        return ParquetSink(info, output)
    if WRITERS[fmt] is JsonlSink:
        return JsonlSink(info, output, resume, expected, settings)
    if resume:
        raise ValueError("only JSON lines can be resumed")
    return WRITERS[fmt](info, output)


def model_block(info: ModelInfo) -> dict[str, Any]:
    """A results document's ``model``: which file made the results, and its intended use."""
    return {**info.identity(), "intended_use": info.metadata.intended_use}


def results_document(
    model: Mapping[str, Any],
    records: list[dict[str, Any]],
    summary: Mapping[str, Any] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The one results document (``results.schema.json``: results_document) every command
    writes: ``btxrd-run --json``, ``btxrd-serve``'s answers and downloads, ``btxrd-explain
    --json``. ``more``: a front end's own keys after the results (the server's ``views``)."""
    document: dict[str, Any] = {"schema_version": RESULTS_SCHEMA_VERSION, "model": dict(model)}
    if summary is not None:
        document["summary"] = dict(summary)
    document["results"] = records
    document.update(more)
    return document


def count_outcomes(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What became of the inputs, counted from their records: classified, failed (refused by
    the gate included) and, of those, refused; classified per class."""
    classified = [r for r in records if r["error"] is None]
    return {
        "inputs": len(records),
        "classified": len(classified),
        "failed": len(records) - len(classified),
        "refused_out_of_distribution": sum(is_refusal(r) for r in records),
        "per_class": dict(Counter(str(r["prediction"]) for r in classified)),
    }


def summarise(predictions: list[Prediction], wall_seconds: float) -> dict[str, Any]:
    """A run's summary: ``count_outcomes`` of its records, with mean timings and wall time."""
    ok = [p for p in predictions if p.ok]
    decode = [p.timings_ms.get("decode_preprocess", 0.0) for p in ok]
    infer = [p.timings_ms.get("inference", 0.0) for p in ok]
    return {
        **count_outcomes([p.to_record() for p in predictions]),
        "mean_decode_preprocess_ms": round(sum(decode) / len(ok), 2) if ok else None,
        "mean_inference_ms": round(sum(infer) / len(ok), 2) if ok else None,
        "wall_seconds": round(wall_seconds, 3),
    }


# Every CSV cell is one of these three: text guarded against formulas, a number, a flag. Records
# may come from a client (the page's export), so a value of the wrong kind is refused, never
# written as it came.


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (OWASP CSV injection:
    a cell that starts with =, +, -, @, tab or carriage return gets a leading apostrophe)."""
    if not isinstance(text, str):
        raise TypeError(f"expected text, not {type(text).__name__}")
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, not {type(value).__name__}")
    return f"{value:.6f}"


def _flag(value: bool) -> str:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {type(value).__name__}")
    return "true" if value else "false"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
