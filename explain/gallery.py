"""Per-class galleries of true positives, false positives and false negatives (the predecessor's
EXPL-01/02; which images, see ``btxrd.explain.selection``), plus the metrics of the run.

Every cell shows the CAM of the predicted class: for a mistake, what the model looked at instead.
Tumour TPs also show the lesion outline and IoU; Normal TPs have no annotation, only attention.
A tumour image the model got wrong (a false negative, or a false positive of another tumour class)
shows its lesion outline without a score: where the lesion was, next to where the model looked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from btxrd.explain import render
from btxrd.explain.evaluate import Evaluation, Log, silent
from btxrd.explain.lesions import score_against_mask
from btxrd.explain.run import ExplainRun
from btxrd.explain.selection import KINDS, cell_title, select_examples
from btxrd.runtime.labels.metrics import (
    classification_metrics,
    expected_calibration_error,
    metric_intervals,
)
from btxrd.runtime.output.atomic import write_text
from btxrd.runtime.settings import GradcamSettings

METRICS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GalleryResult:
    figures: dict[str, render.Png]  # class -> gallery grid, as written to its file
    paths: dict[str, Path]
    metrics: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def gallery_metrics(run: ExplainRun) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/AUC and the confusion matrix, with bootstrap 95 %
    intervals, the ECE, and provenance."""
    evaluation = run.evaluation
    y_true, probabilities = evaluation.y_true, evaluation.probabilities
    metrics = classification_metrics(y_true, probabilities, evaluation.class_names)
    metrics["ece"] = expected_calibration_error(y_true, probabilities)
    metrics["intervals"] = metric_intervals(y_true, probabilities, evaluation.class_names)
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model": run.model_identity,
        "subset": evaluation.subset,
        "num_images": len(evaluation.samples),
        **metrics,
        "out_of_distribution": _gate_figures(evaluation),
        "failed": [{"image_id": i, "error": e} for i, e in evaluation.failed],
    }


def _gate_figures(evaluation) -> dict[str, Any] | None:
    """Which evaluated images the exported model's gate refuses (btxrd-run would give them no
    class); the metrics above count every image, as the model card's figures do."""
    if evaluation.gate is None:
        return None
    refused = evaluation.refused
    return {
        "gate": evaluation.gate,
        "refused": len(refused),
        "retention": 1.0 - len(refused) / len(evaluation.samples),
        "refused_images": [evaluation.samples[i].image_id for i in refused],
    }


def run_gallery(
    run: ExplainRun,
    out: Path,
    settings: GradcamSettings,
    *,
    log: Log = silent,
) -> GalleryResult:
    """Write ``gallery_{class}.png`` for every class and ``metrics.json`` into ``out``
    (``settings.k`` examples per row, CAMs by ``settings.method``)."""
    k, method, alpha = settings.k, settings.method, settings.alpha
    iou_threshold = settings.iou_threshold
    evaluation = run.evaluation
    names = evaluation.class_names
    selections = [
        select_examples(evaluation.y_true, evaluation.probabilities, c, k, name)
        for c, name in enumerate(names)
    ]
    warnings = [w for s in selections for w in s.shortfalls()]
    for warning in warnings:
        log(f"warning: {warning}")
    chosen = sorted({i for s in selections for kind in KINDS for i in s.indices[kind]})
    drawn = _views(run, chosen, method, alpha, iou_threshold, warnings)
    views = dict(zip(chosen, drawn, strict=True))
    figures, paths = {}, {}
    layer = run.explainer.target_layer_name
    for c, selection in enumerate(selections):
        rows = [
            (kind, [_cell(kind, c, i, evaluation, views[i]) for i in selection.indices[kind]])
            for kind in KINDS
        ]
        title = f"{selection.class_name}: {method} on {layer}"
        figure = render.encode_png(render.grid(rows, title=title, columns=k))
        figures[selection.class_name] = figure
        paths[selection.class_name] = render.write_png(
            figure, out / f"gallery_{_safe(selection.class_name)}.png"
        )
    metrics = gallery_metrics(run)
    metrics["method"] = method
    metrics["gallery"] = {
        s.class_name: {
            kind: [evaluation.samples[i].image_id for i in s.indices[kind]] for kind in KINDS
        }
        | {"available": s.available}
        for s in selections
    }
    metrics["warnings"] = warnings
    paths["metrics"] = out / "metrics.json"
    write_text(paths["metrics"], json.dumps(metrics, indent=2) + "\n")
    return GalleryResult(figures, paths, metrics, tuple(warnings))


@dataclass(frozen=True)
class _View:
    image: Image.Image
    note: str  # IoU for tumour TPs, "attention only" for Normal TPs, "lesion outlined" for
    # annotated mistakes, or the problem of a bad CAM


def _views(
    run: ExplainRun,
    chosen: list[int],
    method: str,
    alpha: float,
    iou_threshold: float,
    warnings: list[str],
) -> list[_View]:
    """The CAM of the predicted class for each chosen sample, drawn once."""
    evaluation = run.evaluation
    y_pred = evaluation.y_pred
    views = []
    for index, result in zip(chosen, run.predicted_cams(chosen, method), strict=True):
        sample, thumbnail = evaluation.samples[index], evaluation.images[index].thumbnail
        if not result.ok:
            warnings.append(f"{sample.image_id}: {result.problem}")
            views.append(_View(render.thumbnail(thumbnail), f"no CAM: {result.problem}"))
            continue
        note, mask = "", None
        if evaluation.y_true[index] == y_pred[index]:
            note, mask = _annotation_note(run, index, result, iou_threshold)
        elif sample.annotation_path is not None:
            note, mask = _missed_lesion(run, index)
        views.append(_View(render.attention(thumbnail, result.cam, alpha, mask), note))
    return views


def _cell(kind: str, class_index: int, index: int, evaluation: Evaluation, view: _View):
    names = evaluation.class_names
    true, predicted = int(evaluation.y_true[index]), int(evaluation.y_pred[index])
    probabilities = evaluation.probabilities[index]
    lines = [cell_title(kind, names[true], names[predicted], float(probabilities[predicted]))]
    detail = evaluation.samples[index].image_id
    if kind == "FN":
        detail += f", p({names[class_index]}) {probabilities[class_index]:.2f}"
    lines.append(detail)
    if view.note:
        lines.append(view.note)
    return render.captioned(view.image, lines)


def _annotation_note(run: ExplainRun, index: int, result, iou_threshold: float):
    if run.evaluation.samples[index].annotation_path is None:
        return "attention only (no annotation)", None
    mask, reason = run.lesion_mask(index)
    scores, reason = score_against_mask(mask, reason, result, iou_threshold)
    if scores is None:
        return f"IoU n/a: {reason}", None
    hit = "hit" if scores.pointing_hit else "miss"
    return f"IoU@{iou_threshold:g} {scores.iou:.2f} (best {scores.iou_best:.2f}), {hit}", mask.mask


def _missed_lesion(run: ExplainRun, index: int) -> tuple[str, np.ndarray | None]:
    """The lesion outline of a misclassified tumour image; no score, since its CAM is of the
    predicted class, not of the lesion's."""
    mask, reason = run.lesion_mask(index)
    if mask is None or not mask.ok:
        return f"no lesion outline: {reason}", None
    return "annotated lesion outlined", mask.mask


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
