"""Check a model on labelled images without torch (``btxrd-run --dir DIR --labels FILE``), as
timm's ``onnx_validate`` does: accuracy, per-class precision and recall, macro AUC, each with a
bootstrap 95 % interval, the ECE and the confusion matrix.

Labels come from a CSV with an ``image`` (or ``image_id``/``image_name``) column and a ``label``
column, e.g. the ``labels.csv`` of ``models/samples``, or from a BTXRD-layout folder, whose
metadata sheet gives each ``image_id`` its class by BTXRD's rule. An image is matched by its path
as given, then by its file name, then by its name without the extension (the real sheet says
``.jpeg`` of some ``.jpg`` files). Images the gate refused or that failed are not scored; they
are counted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from btxrd.runtime.errors import ConfigError, InputError
from btxrd.runtime.metrics import (
    classification_metrics,
    expected_calibration_error,
    metric_intervals,
)
from btxrd.runtime.sheet import find_root, label_from_row, read_rows

_IMAGE_COLUMNS = ("image", "image_id", "image_name", "path")


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, str]:
    """``image -> label`` from a CSV or a BTXRD-layout folder; ``ConfigError`` naming the file
    for anything unusable."""
    labels = _sheet_labels(path) if path.is_dir() else _csv_labels(path)
    unknown = sorted(set(labels.values()) - set(class_names))
    if unknown:
        raise ConfigError(
            f"{path}: labels {unknown} are not among the model's classes {list(class_names)}"
        )
    return labels


def _sheet_labels(folder: Path) -> dict[str, str]:
    try:
        rows = read_rows(find_root(folder))
    except InputError as exc:  # no sheet, an unreadable one, or not BTXRD's columns
        raise ConfigError(str(exc)) from None
    return {str(row["image_id"]).strip(): label_from_row(row) for row in rows}


def _csv_labels(path: Path) -> dict[str, str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the labels ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    columns = set(rows[0]) if rows else set()
    image_column = next((c for c in _IMAGE_COLUMNS if c in columns), None)
    if image_column is None or "label" not in columns:
        raise ConfigError(
            f"{path}: needs a 'label' column and an image column (one of "
            f"{', '.join(_IMAGE_COLUMNS)}); found {sorted(columns) or 'no rows'}"
        )
    return {row[image_column].strip(): row["label"].strip() for row in rows}


def validate(
    records: Iterable[dict[str, Any]], labels: dict[str, str], class_names: Sequence[str]
) -> dict[str, Any]:
    """The figures of the labelled, classified records (keys as ``classification_metrics``,
    plus ``ece``, ``intervals`` and the counts of what was left out)."""
    by_name = {Path(key).name: label for key, label in labels.items()}
    by_stem = {Path(key).stem: label for key, label in labels.items()}
    y_true, rows = [], []
    unlabelled = not_scored = 0
    for record in records:
        name = record["image_name"]
        label = (
            labels.get(record.get("path") or "")
            or by_name.get(name)
            or by_stem.get(Path(name).stem)
        )
        if label is None:
            unlabelled += 1
        elif record["error"] is not None or not record["scores"]:
            not_scored += 1
        else:
            y_true.append(class_names.index(label))
            rows.append([record["scores"][name] for name in class_names])
    counts = {"scored": len(rows), "unlabelled": unlabelled, "not_classified": not_scored}
    if not rows:
        return {"counts": counts}
    truth, probabilities = np.asarray(y_true), np.asarray(rows, dtype=np.float64)
    return {
        **classification_metrics(truth, probabilities, class_names),
        "ece": expected_calibration_error(truth, probabilities),
        "intervals": metric_intervals(truth, probabilities, class_names),
        "counts": counts,
    }


def describe(figures: dict[str, Any]) -> list[str]:
    """The figures as lines for a terminal."""
    counts = figures["counts"]
    lines = [
        f"validation: {counts['scored']} labelled images scored, {counts['not_classified']} not "
        f"classified, {counts['unlabelled']} without a label"
    ]
    if not counts["scored"]:
        return lines
    intervals = figures["intervals"]
    lines.append(
        f"accuracy {_ci(figures['accuracy'], intervals['accuracy'])}, macro AUC "
        f"{_ci(figures['macro_auc'], intervals['macro_auc'])}, ECE "
        f"{_ci(figures['ece'], intervals['ece'])} (95 % bootstrap intervals)"
    )
    for name in figures["class_names"]:
        lines.append(
            f"  {name:<12} recall {_ci(figures['recall'][name], intervals['recall'][name])}  "
            f"precision {_ci(figures['precision'][name], intervals['precision'][name])}  "
            f"n={figures['support'][name]}"
        )
    lines.append("confusion matrix (rows true, columns predicted):")
    names = figures["class_names"]
    lines.append("  " + " " * 12 + "".join(f"{n[:10]:>11}" for n in names))
    for name, row in zip(names, figures["confusion_matrix"], strict=True):
        lines.append(f"  {name:<12}" + "".join(f"{v:>11}" for v in row))
    return lines


def _ci(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
