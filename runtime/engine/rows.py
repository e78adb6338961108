"""One Parquet row per input, and classifying one shard into them.

A row is the record every btxrd JSON holds (``report.record_of``) flattened into typed columns,
plus what identifies the input and the result: the file's size and sha256, the model's sha256,
btxrd's version. The schema is fixed by the model's class names and the record's fields, so
every part file of a run has the same one. A record field this module does not know yet (one
added to ``Prediction.to_record``) still gets a column: its text, or its JSON for other values.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from btxrd.runtime.decode.dicom import DICOM_FIELDS
from btxrd.runtime.engine.manifest import Shard, require_pyarrow
from btxrd.runtime.install import btxrd_version
from btxrd.runtime.output.report import record_of
from btxrd.runtime.text import name_text

PROBABILITY_PREFIX = "prob_"
# Record fields with columns of their own below; any other field becomes a text column.
_FLATTENED = frozenset(
    {
        "image_name",
        "display_name",
        "prediction",
        "confidence",
        "scores",
        "path",
        "path_escaped",
        "error",
        "notes",
        "ood",
        "identifiers",
        "dicom",
        "timings_ms",
    }
)
_TIMINGS = ("decode_preprocess", "inference")
_CHUNK = 1 << 20


def extra_fields(classifier: Any) -> list[str]:
    """Record fields beyond the ones flattened here, in record order (every record has the same
    fields, a failure's included, so one failure record tells them)."""
    record = record_of(classifier.failure("probe", "probe"))
    return [key for key in record if key not in _FLATTENED]


def schema_for(class_names: tuple[str, ...], extra: list[str]) -> Any:
    """The pyarrow schema of every part file of a run."""
    pa = require_pyarrow()
    string, double = pa.string(), pa.float64()
    return pa.schema(
        [
            ("input_index", pa.int64()),
            ("path", string),  # as given on the command line or found under --dir
            ("path_escaped", pa.bool_()),  # path holds escapes: the name is not UTF-8
            ("image_name", string),
            ("display_name", string),
            ("file_size", pa.int64()),
            ("file_sha256", string),
            ("file_mtime_ns", pa.int64()),  # the file's mtime when the run listed it
            ("model_sha256", string),
            ("prediction", string),
            ("confidence", double),
            *[(PROBABILITY_PREFIX + name, double) for name in class_names],
            ("ood_score", double),
            ("ood_threshold", double),
            ("ood_method", string),
            ("in_distribution", pa.bool_()),
            ("ood_gate", string),
            ("error", string),
            ("notes", pa.list_(string)),
            ("identifiers", pa.struct([("format", string), ("fields", pa.map_(string, string))])),
            # Deprecated since results schema 3: the DICOM fields of identifiers, for one release.
            ("dicom", pa.struct([(name, string) for name in DICOM_FIELDS])),
            *[(f"{name}_ms", double) for name in _TIMINGS],
            *[(name, string) for name in extra],
            ("btxrd_version", string),
        ]
    )


def row_of(
    record: dict[str, Any],
    index: int,
    facts: tuple[int | None, str | None],
    mtime_ns: int | None,
    model_sha256: str,
    class_names: tuple[str, ...],
    extra: list[str],
    btxrd: str,
) -> dict[str, Any]:
    """One input's row: its record (``report.record_of``) in the schema's columns."""
    ood = record.get("ood") or {}
    scores = record.get("scores") or {}
    timings = record.get("timings_ms") or {}
    row: dict[str, Any] = {
        "input_index": index,
        "path": record.get("path"),
        "path_escaped": bool(record.get("path_escaped")),
        "image_name": record.get("image_name"),
        "display_name": record.get("display_name"),
        "file_size": facts[0],
        "file_sha256": facts[1],
        "file_mtime_ns": mtime_ns if facts[1] is not None else None,
        "model_sha256": model_sha256,
        "prediction": record.get("prediction"),
        "confidence": record.get("confidence"),
        **{PROBABILITY_PREFIX + name: scores.get(name) for name in class_names},
        "ood_score": ood.get("score"),
        "ood_threshold": ood.get("threshold"),
        "ood_method": ood.get("method"),
        "in_distribution": ood.get("in_distribution"),
        "ood_gate": ood.get("gate"),
        "error": record.get("error"),
        "notes": record.get("notes") or [],
        "identifiers": _identifiers(record.get("identifiers")),
        "dicom": record.get("dicom"),
        **{f"{name}_ms": timings.get(name) for name in _TIMINGS},
        **{name: _text(record.get(name)) for name in extra},
        "btxrd_version": btxrd,
    }
    return row


def _identifiers(identifiers: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record's identifiers as the Parquet struct: the map's entries as (key, value) pairs."""
    if identifiers is None:
        return None
    return {"format": identifiers["format"], "fields": list(identifiers["fields"].items())}


def file_facts(path: Path) -> tuple[int | None, str | None]:
    """A file's size and sha256 (None, None when it cannot be read: its row says why)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (OSError, ValueError):
        return None, None
    return size, digest.hexdigest()


def classify_shard(classifier: Any, shard: Shard, extra: list[str]) -> Any:
    """Classify one shard's inputs (in order, failures as error rows) into a pyarrow table.

    The local engine and every Ray worker run this same function on the runtime's own
    ``Classifier``, so a row never depends on where it was computed. Files are hashed in a
    thread beside the classifier's decode pool (hashlib releases the GIL).
    """
    pa = require_pyarrow()
    names = classifier.class_names
    model_sha256 = classifier.info.sha256
    btxrd = btxrd_version()
    readable = [e for e in shard.entries if e.problem is None]
    with ThreadPoolExecutor(1, thread_name_prefix="btxrd-hash") as hasher:
        facts = hasher.map(file_facts, [e.path for e in readable])
        classified = classifier.predict_many([e.path for e in readable])
        results = iter(zip(classified, facts, strict=True))
        rows = []
        for entry in shard.entries:
            if entry.problem is not None:
                prediction = classifier.failure(entry.path, entry.problem)
                fact: tuple[int | None, str | None] = (None, None)
            else:
                prediction, fact = next(results)
            record = record_of(prediction, entry.display_name)
            record["path"], record["path_escaped"] = name_text(entry.path)
            rows.append(
                row_of(record, entry.index, fact, entry.mtime_ns, model_sha256, names, extra, btxrd)
            )
    return pa.Table.from_pylist(rows, schema=schema_for(names, extra))


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def worker_cwd(folder: str) -> None:
    """Run where the driver runs (relative input paths mean the same there), when that folder
    exists on this machine; otherwise relative paths fail with their own error rows."""
    if os.path.isdir(folder):
        os.chdir(folder)
