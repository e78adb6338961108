"""Attention vs annotation (the predecessor's EXPL-03, done right).

For every correctly classified tumour image with a LabelMe annotation: the lesion mask (polygons;
a rectangle only for a lesion without one) in the model input's frame, the CAM of the predicted
(= true) class, and the scores of ``btxrd.explain.scores``. Writes ``annotation_report.json``
(the predecessor's fields plus the new scores) and ``annotation_comparison.png`` (four panels per
image: original, mask, heatmap, overlay with scores) for the best and the worst cases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from btxrd.explain import render
from btxrd.explain.cam import CamResult
from btxrd.explain.evaluate import Evaluation, Log, silent
from btxrd.explain.lesions import score_against_mask
from btxrd.explain.run import ExplainRun
from btxrd.explain.scores import (
    THRESHOLDS,
    AttentionScores,
    summarise,
)
from btxrd.explain.selection import DEFAULT_PANELS
from btxrd.export.data.dataset import Sample
from btxrd.export.data.masks import LesionMask
from btxrd.runtime.labels.metrics import bootstrap_interval
from btxrd.runtime.labels.sheet import NORMAL
from btxrd.runtime.output.atomic import write_text
from btxrd.runtime.settings import GradcamSettings

REPORT_SCHEMA_VERSION = 1
_MEDIAN_FIELDS = ("iou", "iou_best", "energy_in_lesion", "lesion_fraction")
# Yes/no scores: their mean is a rate, they have no useful median.
_SCORE_FIELDS = (*_MEDIAN_FIELDS, "pointing_hit", "pointing_reachable")


@dataclass(frozen=True)
class ImageScore:
    """One tumour true positive: its mask, its scores, or why it could not be scored."""

    sample: Sample
    label: str
    confidence: float
    mask: LesionMask | None
    scores: AttentionScores | None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "image_id": self.sample.image_id,
            "class": self.label,
            "confidence": round(self.confidence, 6),
            "iou": None,
        }
        if self.scores is not None:
            record.update(self.scores.to_json())
        if self.reason:
            record["reason"] = self.reason
        if self.mask is not None:
            record["mask"] = self.mask.describe()
        return record


@dataclass(frozen=True)
class AnnotationResult:
    report: dict[str, Any]
    scores: tuple[ImageScore, ...]
    # Four-panel rows of the best cases above those of the worst, as written to its file; None
    # when no image could be scored.
    comparison: render.Png | None
    paths: dict[str, Path]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def tumour_true_positives(evaluation: Evaluation) -> list[int]:
    """Indices of correctly classified images whose class is not Normal."""
    names = evaluation.class_names
    return [
        i
        for i, (t, p) in enumerate(zip(evaluation.y_true, evaluation.y_pred, strict=True))
        if t == p and names[t] != NORMAL
    ]


def run_annotations(
    run: ExplainRun,
    out: Path,
    settings: GradcamSettings,
    *,
    panels: int = DEFAULT_PANELS,
    log: Log = silent,
) -> AnnotationResult:
    """Score attention against annotations; write the report and the comparison figure."""
    method, alpha, iou_threshold = settings.method, settings.alpha, settings.iou_threshold
    evaluation = run.evaluation
    candidates = tumour_true_positives(evaluation)
    annotated = [i for i in candidates if evaluation.samples[i].annotation_path is not None]
    warnings: list[str] = []
    if len(annotated) < len(candidates):
        warnings.append(
            f"{len(candidates) - len(annotated)} correctly classified tumour image(s) have no "
            "annotation file and are not scored"
        )
    log(f"scoring attention on {len(annotated)} annotated tumour true positives")
    scores = [
        _score(run, index, result, iou_threshold)
        for index, result in zip(annotated, run.predicted_cams(annotated, method), strict=True)
    ]
    warnings += [f"{s.sample.image_id}: IoU is null: {s.reason}" for s in scores if s.reason]
    for warning in warnings:
        log(f"warning: {warning}")
    ranked = sorted(
        (s for s in scores if s.scores is not None),
        key=lambda s: (-s.scores.iou_best, s.sample.image_id),  # type: ignore[union-attr]
    )
    best, worst = _extremes(ranked, panels)
    best_image = _panel_grid(run, best, method, alpha, iou_threshold, "Best")
    worst_image = _panel_grid(run, worst, method, alpha, iou_threshold, "Worst")
    paths: dict[str, Path] = {}
    figures = [im for im in (best_image, worst_image) if im is not None]
    comparison = render.encode_png(render.stack(figures)) if figures else None
    if comparison is not None:
        paths["comparison"] = render.write_png(comparison, out / "annotation_comparison.png")
    else:
        warnings.append("no image could be scored; annotation_comparison.png not written")
        log(f"warning: {warnings[-1]}")
    report = build_report(run, scores, method, iou_threshold, warnings)
    report["num_without_annotation"] = len(candidates) - len(annotated)
    report["best_cases"] = [s.sample.image_id for s in best]
    report["worst_cases"] = [s.sample.image_id for s in worst]
    paths["report"] = out / "annotation_report.json"
    write_text(paths["report"], json.dumps(report, indent=2) + "\n")
    return AnnotationResult(report, tuple(scores), comparison, paths, tuple(warnings))


def build_report(
    run: ExplainRun,
    scores: Sequence[ImageScore],
    method: str,
    iou_threshold: float,
    warnings: Sequence[str],
) -> dict[str, Any]:
    """The predecessor's fields (``per_image``, ``mean_iou``, ``num_images``, ``iou_threshold``,
    ``summary``) plus the new scores, their means and medians, and how masks were built."""
    identity = run.model_identity
    scored = [s.scores for s in scores if s.scores is not None]
    stats = {name: summarise([getattr(s, name) for s in scored]) for name in _SCORE_FIELDS}
    masks = [s.mask for s in scores if s.mask is not None]
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": identity,
        "method": method,
        "subset": run.evaluation.subset,
        "iou_threshold": iou_threshold,
        "thresholds": list(THRESHOLDS),
        "num_images": len(scores),
        "num_scored": len(scored),
        "mean_iou": stats["iou"]["mean"],
        "means": {name: stats[name]["mean"] for name in _SCORE_FIELDS},
        "medians": {name: stats[name]["median"] for name in _MEDIAN_FIELDS},
        "pointing_hit_rate": stats["pointing_hit"]["mean"],
        # The best hit rate any CAM on this grid could reach on these lesions.
        "pointing_ceiling": stats["pointing_reachable"]["mean"],
        "cam_grid": identity["cam_grid"],
        "masks": {
            "from_polygon": sum(m.polygons for m in masks),
            "from_rectangle": sum(m.rectangles for m in masks),
            "images_with_rectangle_fallback": sum(1 for m in masks if m.rectangles),
        },
        "per_image": [s.to_json() for s in scores],
        "warnings": list(warnings),
    }
    report["intervals"] = _intervals(scored)
    report["summary"] = _summary(report, identity["target_layer"])
    return report


def _intervals(scored: Sequence[AttentionScores]) -> dict[str, Any]:
    """Bootstrap 95 % intervals (images resampled) of the headline attention figures."""
    hits = np.array([s.pointing_hit for s in scored], dtype=np.float64)
    iou = np.array([s.iou for s in scored], dtype=np.float64)
    best = np.array([s.iou_best for s in scored], dtype=np.float64)
    n = len(scored)
    return {
        "level": 0.95,
        "method": "percentile bootstrap over images",
        "pointing_hit_rate": bootstrap_interval(lambda rows: float(hits[rows].mean()), n),
        "mean_iou": bootstrap_interval(lambda rows: float(iou[rows].mean()), n),
        "median_iou_best": bootstrap_interval(lambda rows: float(np.median(best[rows])), n),
    }


def _score(run: ExplainRun, index: int, result: CamResult, iou_threshold: float) -> ImageScore:
    evaluation = run.evaluation
    mask, reason = run.lesion_mask(index)
    scores, reason = score_against_mask(mask, reason, result, iou_threshold, run.explainer.cam_grid)
    return ImageScore(
        sample=evaluation.samples[index],
        label=evaluation.class_names[evaluation.y_true[index]],
        confidence=float(evaluation.probabilities[index, evaluation.y_pred[index]]),
        mask=mask,
        scores=scores,
        reason=reason,
    )


def _extremes(ranked: list[ImageScore], panels: int) -> tuple[list[ImageScore], list[ImageScore]]:
    """The ``panels`` best and ``panels`` worst, never the same image twice."""
    if len(ranked) <= 2 * panels:
        half = (len(ranked) + 1) // 2
        return ranked[:half], ranked[half:][::-1]
    return ranked[:panels], ranked[-panels:][::-1]


def _panel_grid(run: ExplainRun, chosen, method, alpha, iou_threshold, which):
    if not chosen:
        return None
    evaluation = run.evaluation
    by_id = {s.image_id: i for i, s in enumerate(evaluation.samples)}
    indices = [by_id[s.sample.image_id] for s in chosen]
    rows = []
    for rank, (score, index, result) in enumerate(
        zip(chosen, indices, run.predicted_cams(indices, method), strict=True), start=1
    ):
        thumbnail = evaluation.images[index].thumbnail
        rows.append(
            (f"#{rank}", _panels(score, thumbnail, result.cam, method, alpha, iou_threshold))
        )
    order = "highest" if which == "Best" else "lowest"
    layer = run.model_identity["target_layer"]
    title = f"{which} cases: {order} best-threshold IoU ({method} on {layer})"
    return render.grid(rows, title=title, columns=4)


def _panels(score: ImageScore, image: Image.Image, cam, method, alpha, iou_threshold):
    """Original, mask, heatmap, overlay, drawn from ``image`` (the run keeps a thumbnail)."""
    s, mask = score.scores, score.mask
    size = render.display_size(image.size)
    built = f"{mask.polygons} polygon(s)"
    if mask.rectangles:
        built += f", {mask.rectangles} rectangle(s) (no polygon)"
    hit = "hit" if s.pointing_hit else "miss"
    if s.pointing_reachable is False:
        hit += " (unreachable)"
    return [
        render.captioned(
            render.thumbnail(image),
            [f"{score.sample.image_id}", f"{score.label} ({score.confidence:.2f})"],
        ),
        render.captioned(render.mask_view(mask.mask, size), ["lesion mask", built]),
        render.captioned(render.heatmap(cam, size), [f"{method}: {score.label}", "CAM, [0, 1]"]),
        render.captioned(
            render.attention(image, cam, alpha, mask.mask),
            [
                f"IoU@{iou_threshold:g} {s.iou:.2f}, best {s.iou_best:.2f} @{s.best_threshold:g}",
                f"pointing {hit}, energy {s.energy_in_lesion:.2f} (area {s.lesion_fraction:.2f})",
            ],
        ),
    ]


def _summary(report: dict[str, Any], layer: str) -> str:
    n, scored = report["num_images"], report["num_scored"]
    head = (
        f"{scored} of {n} correctly classified, annotated tumour images scored "
        f"({report['method']} on {layer}, {report['subset']})."
    )
    if not scored:
        return head + " Nothing to summarise."
    means, medians = report["means"], report["medians"]
    masks = report["masks"]
    rows, columns = report["cam_grid"]
    return (
        f"{head} Mean IoU at {report['iou_threshold']:g}: {means['iou']:.3f} (the predecessor's "
        f"figure). Median best-threshold IoU {medians['iou_best']:.3f}; pointing game hit rate "
        f"{report['pointing_hit_rate']:.2f}, where any CAM on this {rows} x {columns} grid could "
        f"reach at most {report['pointing_ceiling']:.2f}; median CAM energy inside the lesion "
        f"{medians['energy_in_lesion']:.2f}, where a uniform map would give "
        f"{medians['lesion_fraction']:.2f}. Masks from {masks['from_polygon']} polygon(s) and "
        f"{masks['from_rectangle']} rectangle(s) of lesions without a polygon."
    )
