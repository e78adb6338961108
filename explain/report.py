"""One self-contained ``report.html``: metrics, confusion matrix, galleries, attention vs
annotation with the best and worst cases. Images are embedded as data URIs (the bytes of the
PNG files beside it, encoded once), so the file can be mailed or archived alone; there is no
script and nothing is fetched."""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btxrd.explain import render
from btxrd.explain.annotations import AnnotationResult, run_annotations
from btxrd.explain.evaluate import Log, silent
from btxrd.explain.gallery import GalleryResult, run_gallery
from btxrd.explain.run import ExplainRun
from btxrd.explain.selection import DEFAULT_PANELS
from btxrd.runtime.atomic import write_text
from btxrd.runtime.contract import intended_use_for
from btxrd.runtime.settings import GradcamSettings

NOT_FOR_CLINICAL_USE = (
    "Research tool, not for clinical use. Not a medical device; nothing here is a diagnosis or a "
    "basis for treatment. Attention maps show where the network's evidence is, not whether it is "
    "right."
)
_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;
color:#1d1d1f;background:#fafafa}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:.8em 1em;border-radius:6px}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .7em;
text-align:right}th{background:#eee}td.l,th.l{text-align:left}
td.diag{background:#d8f0d8;font-weight:bold}img{max-width:100%;height:auto;display:block;
margin:.6em 0;border:1px solid #999}figcaption{color:#555;font-size:.9em}
.kv td{text-align:left}code{background:#eee;padding:0 .25em}details{margin:1em 0}
dl dt{font-weight:bold}
"""


@dataclass(frozen=True)
class ReportResult:
    path: Path
    gallery: GalleryResult
    annotations: AnnotationResult


def run_report(
    run: ExplainRun,
    out: Path,
    settings: GradcamSettings,
    *,
    panels: int = DEFAULT_PANELS,
    log: Log = silent,
) -> ReportResult:
    """Galleries, metrics, annotation scores and ``report.html``, all in ``out``."""
    gallery = run_gallery(run, out, settings, log=log)
    annotations = run_annotations(run, out, settings, panels=panels, log=log)
    path = out / "report.html"
    write_text(path, build_html(run, gallery, annotations))
    return ReportResult(path, gallery, annotations)


def build_html(run: ExplainRun, gallery: GalleryResult, annotations: AnnotationResult) -> str:
    """The page; its figures embed the PNG bytes already written to their files."""
    metrics, report = gallery.metrics, annotations.report
    evaluation, identity = run.evaluation, run.model_identity
    intended = intended_use_for(run.explainer.demo)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>btxrd-explain report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>btxrd-explain report</h1>",
        f'<p class="warning"><strong>{_e(NOT_FOR_CLINICAL_USE)}</strong><br>{_e(intended)}</p>',
        "<h2>Model and data</h2>",
        _table(
            ["", ""],
            [
                ["checkpoint", identity["checkpoint"]],
                ["sha256", identity["sha256"]],
                ["architecture", identity["arch"]],
                ["input size", " x ".join(map(str, identity["image_size"]))],
                [
                    "CAM",
                    f"{report['method']} on {identity['target_layer']} "
                    f"({' x '.join(map(str, identity['cam_grid']))} grid)",
                ],
                ["images", evaluation.subset],
                ["unreadable images", str(len(evaluation.failed))],
                ["generated", when],
            ],
            header=False,
        ),
        *_classification(metrics),
        "<h2>Galleries</h2>",
        "<p>Per class: the most confident true positives (TP), the most confident false "
        "positives (FP) and the false negatives (FN) with the lowest probability of the class. "
        "Titles read <code>kind: true -&gt; predicted (probability of the prediction)</code>; "
        "every heatmap is the CAM of the predicted class. Tumour TPs show the lesion outline "
        "(white), the CAM's maximum (green cross) and the IoU; misclassified tumour images "
        "show the outline and the maximum without a score (their CAM is of another class); "
        "Normal images have no annotation, so they show attention only.</p>",
        *(_figure(png, f"Gallery: {name}") for name, png in gallery.figures.items()),
        *_annotation_section(report, annotations),
        *_warnings([*gallery.warnings, *annotations.warnings], evaluation.failed),
        f"<p><small>{_e(NOT_FOR_CLINICAL_USE)} Written by btxrd-explain.</small></p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _classification(metrics: dict[str, Any]) -> list[str]:
    names = metrics["class_names"]
    intervals = metrics.get("intervals") or {}

    def with_interval(key: str, name: str) -> str:
        return _num_ci(metrics[key][name], (intervals.get(key) or {}).get(name))

    rows = [
        [
            name,
            with_interval("precision", name),
            with_interval("recall", name),
            with_interval("auc", name),
            str(metrics["support"][name]),
        ]
        for name in names
    ]
    matrix = metrics["confusion_matrix"]
    cm_rows = "".join(
        f'<tr><th class="l">{_e(name)}</th>'
        + "".join(
            f'<td class="{"diag" if i == j else ""}">{count}</td>' for j, count in enumerate(row)
        )
        + "</tr>"
        for i, (name, row) in enumerate(zip(names, matrix, strict=True))
    )
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    return [
        "<h2>Classification</h2>",
        f"<p>Accuracy <strong>{_num_ci(metrics['accuracy'], intervals.get('accuracy'))}"
        f"</strong>, macro AUC <strong>{_num_ci(metrics['macro_auc'], intervals.get('macro_auc'))}"
        f"</strong> over {metrics['num_images']} images; expected calibration error "
        f"{_num_ci(metrics.get('ece'), intervals.get('ece'))} (15 bins). In brackets: 95 % "
        "bootstrap intervals (images resampled 1,000 times); a small class has a wide one.</p>",
        _table(["class", "precision", "recall", "AUC (one vs rest)", "images"], rows),
        "<h3>Confusion matrix</h3><p>Rows: true class; columns: predicted class.</p>",
        f'<table><tr><th class="l">true \\ predicted</th>{head}</tr>{cm_rows}</table>',
    ]


def _annotation_section(report: dict[str, Any], annotations: AnnotationResult) -> list[str]:
    means, medians = report["means"], report["medians"]
    labels = {
        "iou": f"IoU at {report['iou_threshold']:g}",
        "iou_best": "IoU at the best threshold",
        "energy_in_lesion": "CAM energy inside the lesion",
        "lesion_fraction": "lesion share of the image (uniform-map baseline)",
    }
    intervals = report.get("intervals") or {}
    rows = [[labels[k], _num(means[k]), _num(medians[k])] for k in labels]
    rows[0][1] = _num_ci(means["iou"], intervals.get("mean_iou"))
    rows[1][2] = _num_ci(medians["iou_best"], intervals.get("median_iou_best"))
    rows.append(
        [
            "pointing game hit rate",
            _num_ci(report["pointing_hit_rate"], intervals.get("pointing_hit_rate")),
            "",
        ]
    )
    rows.append(["pointing game ceiling of the CAM grid", _num(report["pointing_ceiling"]), ""])
    per_image = [
        [
            r["image_id"],
            r["class"],
            _num(r["confidence"]),
            _num(r.get("iou")),
            _num(r.get("iou_best")),
            _num(r.get("best_threshold"), 1),
            _pointing_text(r),
            _num(r.get("energy_in_lesion")),
            _mask_text(r.get("mask")),
            r.get("reason", ""),
        ]
        for r in report["per_image"]
    ]
    masks = report["masks"]
    parts = [
        "<h2>Attention vs annotation</h2>",
        f"<p>{_e(report['summary'])}</p>",
        _table(["score", "mean", "median"], rows),
        f"<p>Lesion masks: {masks['from_polygon']} from polygons, {masks['from_rectangle']} from "
        "rectangles (lesions drawn without a polygon; a rectangle overstates the lesion).</p>",
        "<dl><dt>IoU at a threshold</dt><dd>The CAM (min-max normalised, at the model-input grid) "
        "binarised at the threshold, against the lesion mask stretched the same way as the "
        "image. The predecessor reported IoU at 0.5 only.</dd>"
        "<dt>Best threshold</dt><dd>The highest IoU over thresholds 0.1 to 0.9: a low IoU at 0.5 "
        "with a good best IoU means the right place with the wrong blob size.</dd>"
        "<dt>Pointing game</dt><dd>A hit when the CAM's maximum lies inside a lesion.</dd>"
        "<dt>Pointing game ceiling</dt><dd>A CAM is the target layer's coarse grid upsampled "
        "bilinearly, so its maximum always sits on a cell centre: a lesion that holds no cell "
        "centre is a miss for every possible map. The ceiling is the share of lesions that hold "
        "one, the best hit rate any model with this grid could score.</dd>"
        "<dt>Energy inside the lesion</dt><dd>The share of the CAM's total mass inside the "
        "lesion; a map with no preference would score the lesion's share of the image.</dd></dl>",
    ]
    if annotations.comparison is not None:
        parts.append("<h3>Best and worst cases</h3>")
        parts.append(
            _figure(
                annotations.comparison,
                "Best cases above, worst cases below: original, lesion mask, heatmap, overlay",
            )
        )
    parts.append(
        f"<details><summary>All {len(per_image)} images</summary>"
        + _table(
            [
                "image",
                "class",
                "confidence",
                "IoU",
                "best IoU",
                "at",
                "pointing",
                "energy",
                "mask",
                "note",
            ],
            per_image,
        )
        + "</details>"
    )
    return parts


def _warnings(warnings: Sequence[str], failed: Iterable[tuple[str, str]]) -> list[str]:
    items = [*warnings, *(f"{image_id}: {error}" for image_id, error in failed)]
    if not items:
        return []
    return ["<h2>Warnings</h2><ul>", *(f"<li>{_e(w)}</li>" for w in items), "</ul>"]


def _figure(png: render.Png, caption: str) -> str:
    return (
        f'<figure><img src="{png.data_uri()}" alt="{_e(caption)}" '
        f'width="{png.width}" height="{png.height}"><figcaption>{_e(caption)}</figcaption>'
        "</figure>"
    )


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(
            f'<{tag} class="{"l" if i == 0 else ""}">{_e(v)}</{tag}>' for i, v in enumerate(values)
        )

    head = f"<tr>{cells('th', columns)}</tr>" if header else ""
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table>{head}{body}</table>" if header else f'<table class="kv">{body}</table>'


def _pointing_text(record: dict[str, Any]) -> str:
    hit = record.get("pointing_hit")
    if hit is None:
        return ""
    if hit:
        return "hit"
    return "miss (unreachable)" if record.get("pointing_reachable") is False else "miss"


def _mask_text(mask: dict[str, Any] | None) -> str:
    if not mask:
        return ""
    text = f"{mask['from_polygon']} polygon"
    if mask["from_rectangle"]:
        text += f", {mask['from_rectangle']} rectangle"
    return text


def _num_ci(value: float | None, interval: list[float] | None) -> str:
    """A figure with its 95 % interval, e.g. ``0.961 [0.946, 0.974]``."""
    if value is None:
        return ""
    return _num(value) + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
