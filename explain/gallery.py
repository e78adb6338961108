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
from btxrd.explain.annotations import annotation_mask, score_annotation
from btxrd.explain.evaluate import Evaluation, Log, cams_for, silent
from btxrd.explain.model import Explainer
from btxrd.explain.scores import DEFAULT_IOU_THRESHOLD
from btxrd.explain.selection import KINDS, cell_title, select_examples
from btxrd.export.data.metrics import classification_metrics
from btxrd.runtime.atomic import write_text
from btxrd.runtime.settings import OVERLAY_ALPHA

METRICS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class GalleryResult:
    images: dict[str, Image.Image]  # class -> gallery grid
    paths: dict[str, Path]
    metrics: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def gallery_metrics(explainer: Explainer, evaluation: Evaluation) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/AUC and the confusion matrix, with provenance."""
    metrics = classification_metrics(
        evaluation.y_true, evaluation.probabilities, evaluation.class_names
    )
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model": explainer.identity(),
        "subset": evaluation.subset,
        "num_images": len(evaluation.samples),
        **metrics,
        "failed": [{"image_id": i, "error": e} for i, e in evaluation.failed],
    }


def run_gallery(
    explainer: Explainer,
    evaluation: Evaluation,
    out: Path,
    *,
    k: int = 3,
    method: str = "gradcam",
    alpha: float = OVERLAY_ALPHA,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    log: Log = silent,
) -> GalleryResult:
    """Write ``gallery_{class}.png`` for every class and ``metrics.json`` into ``out``."""
    names = evaluation.class_names
    selections = [
        select_examples(evaluation.y_true, evaluation.probabilities, c, k, name)
        for c, name in enumerate(names)
    ]
    warnings = [w for s in selections for w in s.shortfalls()]
    for warning in warnings:
        log(f"warning: {warning}")
    chosen = sorted({i for s in selections for kind in KINDS for i in s.indices[kind]})
    drawn = _views(explainer, evaluation, chosen, method, alpha, iou_threshold, warnings)
    views = dict(zip(chosen, drawn, strict=True))
    images, paths = {}, {}
    for c, selection in enumerate(selections):
        rows = [
            (kind, [_cell(kind, c, i, evaluation, views[i]) for i in selection.indices[kind]])
            for kind in KINDS
        ]
        title = f"{selection.class_name}: {method} on {explainer.target_layer_name}"
        images[selection.class_name] = render.grid(rows, title=title, columns=k)
        paths[selection.class_name] = render.save_png(
            images[selection.class_name], out / f"gallery_{_safe(selection.class_name)}.png"
        )
    metrics = gallery_metrics(explainer, evaluation)
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
    return GalleryResult(images, paths, metrics, tuple(warnings))


@dataclass(frozen=True)
class _View:
    image: Image.Image
    note: str  # IoU for tumour TPs, "attention only" for Normal TPs, "lesion outlined" for
    # annotated mistakes, or the problem of a bad CAM


def _views(
    explainer: Explainer,
    evaluation: Evaluation,
    chosen: list[int],
    method: str,
    alpha: float,
    iou_threshold: float,
    warnings: list[str],
) -> list[_View]:
    """The CAM of the predicted class for each chosen sample, drawn once."""
    y_pred = evaluation.y_pred
    samples = [evaluation.samples[i] for i in chosen]
    targets = [int(y_pred[i]) for i in chosen]
    views = []
    for index, (sample, decoded, result) in zip(
        chosen, cams_for(explainer, samples, targets, method), strict=True
    ):
        if not result.ok:
            warnings.append(f"{sample.image_id}: {result.problem}")
            views.append(_View(render.thumbnail(decoded.image), f"no CAM: {result.problem}"))
            continue
        note, mask = "", None
        if evaluation.y_true[index] == y_pred[index]:
            note, mask = _annotation_note(
                sample, decoded.image.size, explainer, result, iou_threshold
            )
        elif sample.annotation_path is not None:
            note, mask = _missed_lesion(sample, decoded.image.size, explainer)
        views.append(_View(render.attention(decoded.image, result.cam, alpha, mask), note))
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


def _annotation_note(sample, size, explainer, result, iou_threshold):
    if sample.annotation_path is None:
        return "attention only (no annotation)", None
    mask, scores, reason = score_annotation(
        sample.annotation_path, size, result, explainer.prep, iou_threshold
    )
    if scores is None:
        return f"IoU n/a: {reason}", None
    hit = "hit" if scores.pointing_hit else "miss"
    return f"IoU@{iou_threshold:g} {scores.iou:.2f} (best {scores.iou_best:.2f}), {hit}", mask.mask


def _missed_lesion(sample, size, explainer) -> tuple[str, np.ndarray | None]:
    """The lesion outline of a misclassified tumour image; no score, since its CAM is of the
    predicted class, not of the lesion's."""
    mask, reason = annotation_mask(sample.annotation_path, size, explainer.prep)
    if mask is None or not mask.ok:
        return f"no lesion outline: {reason}", None
    return "annotated lesion outlined", mask.mask


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
