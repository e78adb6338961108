"""Check a model on labelled images without torch (``btxrd-run --dir DIR --labels FILE``), as
timm's ``onnx_validate`` does: accuracy, per-class precision and recall, macro AUC, each with a
bootstrap 95 % interval, the ECE and the confusion matrix.

Labels come in any layout ``btxrd.runtime.labels.folders`` reads: a CSV ``image,label`` (e.g. the
``labels.csv`` of ``models/samples``), a BTXRD-layout folder or an ImageFolder. An image is
matched by the file it is, then by its path as given, then by its file name, then by its name
without the extension (the real sheet says ``.jpeg`` of some ``.jpg`` files); a name that two
labelled images share matches neither. Images the gate refused or that failed are not scored;
they are counted. ``btxrd-export`` reports its fit data's figures with ``figures`` and
``describe``, so both commands print the same numbers for the same images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from btxrd.runtime.errors import ConfigError, InputError
from btxrd.runtime.labels.folders import read_labelled
from btxrd.runtime.labels.metrics import (
    classification_metrics,
    expected_calibration_error,
    metric_intervals,
)


def read_labels(path: Path, class_names: Sequence[str]) -> dict[str, str]:
    """``image -> label`` from any layout ``read_labelled`` knows, keyed by the image's key (as
    the CSV, sheet or folder names it) and by its absolute path; ``ConfigError`` naming the
    file for anything unusable."""
    try:
        labelled = read_labelled(path, class_names)
    except InputError as exc:  # no layout, an unreadable sheet, an unknown class
        raise ConfigError(str(exc)) from None
    labels = {}
    for image in labelled.images:
        labels[image.key] = image.label
        labels[_absolute(image.path)] = image.label
    return labels


def _absolute(path: Path | str) -> str:
    return os.path.abspath(path)


def validate(
    records: Iterable[dict[str, Any]], labels: dict[str, str], class_names: Sequence[str]
) -> dict[str, Any]:
    """The figures of the labelled, classified records (as ``figures``)."""
    by_name = _unambiguous({Path(key).name: label for key, label in labels.items()}, labels)
    by_stem = _unambiguous({Path(key).stem: label for key, label in labels.items()}, labels)
    y_true, rows = [], []
    unlabelled = not_scored = 0
    for record in records:
        name = record["image_name"]
        path = record.get("path") or ""
        label = (
            (labels.get(_absolute(path)) if path else None)
            or labels.get(path)
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
    return figures(
        np.asarray(y_true, dtype=int), np.asarray(rows, dtype=np.float64), class_names, counts
    )


def figures(
    truth: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    counts: dict[str, int],
) -> dict[str, Any]:
    """Accuracy, precision, recall, AUC (``classification_metrics``), ``ece`` and the 95 %
    bootstrap ``intervals`` of the scored images (``truth`` class indices, ``probabilities``
    N x C), with ``counts`` of what was scored and left out."""
    if not len(truth):
        return {"counts": counts}
    return {
        **classification_metrics(truth, probabilities, class_names),
        "ece": expected_calibration_error(truth, probabilities),
        "intervals": metric_intervals(truth, probabilities, class_names),
        "counts": counts,
    }


def _unambiguous(by_part: dict[str, str], labels: dict[str, str]) -> dict[str, str]:
    """``by_part`` without the names two different labelled images share."""
    images: dict[str, set[str]] = {}
    for key in labels:
        if not os.path.isabs(key):
            continue  # each image appears once under its absolute path
        images.setdefault(Path(key).name, set()).add(key)
        images.setdefault(Path(key).stem, set()).add(key)
    return {part: label for part, label in by_part.items() if len(images.get(part, ())) <= 1}


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
