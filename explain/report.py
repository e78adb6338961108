"""One self-contained ``report.html``: a table of contents, metrics, confusion matrix, a table
of every evaluated image (thumbnail, prediction, attention figures), the galleries and the best
and worst attention cases as captioned figures, with one colour scale for every heatmap.

Self-contained: every picture is embedded as a data URI, so the file can be mailed or archived
alone, and nothing is fetched. Its one script is inline and sorts the table of every image when a
column's heading is clicked; it reads and reorders that table, nothing else, and without it the
table stays in its written order. The PNG figures written beside the page (galleries, the
comparison) keep their drawn captions; the page shows the same pictures cell by cell with HTML
captions (``btxrd.explain.report_images``).

The page is built from small functions with f-strings, every interpolated value through
``html.escape``; Jinja2 would serve as well, but the explain extra does not declare it.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btxrd.explain import report_images
from btxrd.explain.annotations import AnnotationResult, run_annotations
from btxrd.explain.evaluate import Log, silent
from btxrd.explain.gallery import GalleryResult, run_gallery
from btxrd.explain.run import ExplainRun
from btxrd.explain.selection import DEFAULT_PANELS
from btxrd.runtime.labels.metrics import BOOTSTRAP_RESAMPLES, ECE_BINS
from btxrd.runtime.model.contract import intended_use_for
from btxrd.runtime.output.atomic import write_text
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
nav ol{margin:.2em 0}nav li{margin:0}nav ol ol{display:inline;margin:0;padding:0}
nav ol ol li{display:inline}nav ol ol li::before{content:" \\00B7  "}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .7em;
text-align:right}th{background:#eee}td.l,th.l{text-align:left}
td.diag{background:#d8f0d8;font-weight:bold}.kv td{text-align:left}
code{background:#eee;padding:0 .25em}details{margin:1em 0}dl dt{font-weight:bold}
.scroll{max-height:min(80vh,50em);overflow:auto;border:1px solid #ccc;margin:.8em 0}
.images{margin:0;font-size:.9em}.images td,.images th{padding:.2em .45em}
.images thead th{position:sticky;top:0;z-index:1}
.images th button{font:inherit;font-weight:bold;border:0;background:none;padding:0;
cursor:pointer;color:inherit;text-align:inherit}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
.images img{display:block;border:0;margin:0 auto;background:#000}
td.ok{color:#1a6b1a}td.wrong{color:#b00020;font-weight:bold}tr.wrong{background:#fff0f0}
tr:target,figure:target,.case:target{outline:3px solid #e0b000;outline-offset:-3px}
.cells{display:flex;flex-wrap:wrap;gap:.6em}
figure.cell{margin:0;width:240px;background:#1c1c1e;color:#ececec;padding:6px;border-radius:4px}
figure.cell img{display:block;margin:0 auto}
figure.cell figcaption{font-size:.85em;line-height:1.35;margin-top:.3em;color:#d8d8dc}
figure.cell a{color:#9cd0ff}
.case{display:flex;gap:.6em;align-items:flex-start;margin:.6em 0}.rank{font-weight:bold;width:2.5em}
.legend{border:1px solid #ccc;background:#fff;padding:.6em 1em;border-radius:6px;margin:1em 0}
.legend .scale{display:grid;grid-template-columns:max-content minmax(0,32em);gap:.25em .8em;
align-items:center;font-size:.9em}
.legend .bar{height:14px;border:1px solid #999}.legend .ends{display:flex;
justify-content:space-between;font-size:.85em}
.outline{background:#333;color:#fff;padding:0 .3em}.peak{background:#333;color:#0f0;padding:0 .3em}
a.top{position:fixed;right:1em;bottom:1em;background:#fff;border:1px solid #ccc;
padding:.2em .6em;border-radius:4px;font-size:.85em}
@media print{.scroll{max-height:none;overflow:visible}a.top{display:none}}
"""


@dataclass(frozen=True)
class ReportResult:
    path: Path
    gallery: GalleryResult
    annotations: AnnotationResult


@dataclass(frozen=True)
class _Section:
    anchor: str
    title: str
    body: list[str]
    parts: tuple[tuple[str, str], ...] = ()  # (anchor, title) of its subsections


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
    write_text(path, build_html(run, gallery, annotations, settings))
    return ReportResult(path, gallery, annotations)


def build_html(
    run: ExplainRun,
    gallery: GalleryResult,
    annotations: AnnotationResult,
    settings: GradcamSettings,
) -> str:
    """The page: its sections, after the warning and a table of contents."""
    intended = intended_use_for(run.explainer.demo)
    sections = [
        _Section("model", "Model and data", [_model_table(run, annotations)]),
        _Section(
            "classification",
            "Classification",
            _classification(gallery.metrics),
            (("confusion", "Confusion matrix"),),
        ),
        _images_section(run, gallery, annotations, settings),
        _gallery_section(run, gallery, settings),
        _annotation_section(run, annotations, settings),
    ]
    warnings = _warnings([*gallery.warnings, *annotations.warnings], run.evaluation.failed)
    if warnings:
        sections.append(_Section("warnings", "Warnings", warnings))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>btxrd-explain report</title>",
        f"<style>{_CSS}</style></head><body>",
        '<h1 id="top">btxrd-explain report</h1>',
        f'<p class="warning"><strong>{_e(NOT_FOR_CLINICAL_USE)}</strong><br>{_e(intended)}</p>',
        _contents(sections),
    ]
    for section in sections:
        parts.append(f'<section><h2 id="{section.anchor}">{_e(section.title)}</h2>')
        parts.extend(section.body)
        parts.append("</section>")
    parts += [
        f"<p><small>{_e(NOT_FOR_CLINICAL_USE)} Written by btxrd-explain.</small></p>",
        '<a class="top" href="#contents">Contents</a>',
        f"<script>{report_images.SORT_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _contents(sections: Sequence[_Section]) -> str:
    def entry(anchor: str, title: str, inner: str = "") -> str:
        return f'<li><a href="#{anchor}">{_e(title)}</a>{inner}</li>'

    items = []
    for section in sections:
        inner = "".join(entry(a, t) for a, t in section.parts)
        items.append(entry(section.anchor, section.title, f"<ol>{inner}</ol>" if inner else ""))
    return (
        f'<nav id="contents" aria-label="Contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'
    )


def _model_table(run: ExplainRun, annotations: AnnotationResult) -> str:
    evaluation, identity = run.evaluation, run.model_identity
    report = annotations.report
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _table(
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
            ["out-of-distribution gate", _gate_summary(evaluation)],
            ["unreadable images", str(len(evaluation.failed))],
            ["generated", when],
        ],
        header=False,
    )


def _images_section(
    run: ExplainRun,
    gallery: GalleryResult,
    annotations: AnnotationResult,
    settings: GradcamSettings,
) -> _Section:
    evaluation = run.evaluation
    count = len(evaluation.samples)
    mistakes = int((evaluation.y_true != evaluation.y_pred).sum())
    unreadable = (
        f" {len(evaluation.failed)} unreadable image(s) are listed under "
        '<a href="#warnings">Warnings</a>.'
        if evaluation.failed
        else ""
    )
    intro = (
        f"<p>One row per evaluated image ({count}; {mistakes} misclassified, in red), in the order "
        "evaluated (<b>#</b>). Click a column's heading to sort by it, again to reverse (a small "
        "script in this file does it; it fetches nothing). <b>probability</b> is the checkpoint's "
        "softmax probability of its prediction, uncalibrated (hover for every class's). The "
        "attention figures exist "
        "for correctly classified tumour images with an annotation (see "
        '<a href="#attention">Attention vs annotation</a>; hover n/a for why one was not '
        "scored). <b>shown in</b> links to the figures of this page that show the image; each "
        f"figure's image id links back here.{unreadable}</p><p>"
        f"{_gate_text(evaluation)}</p>"
    )
    table = report_images.image_table(run, gallery, annotations, settings.iou_threshold)
    return _Section("images", "Every image", [intro, table])


def _gate_text(evaluation) -> str:
    if evaluation.gate is None:
        return (
            "No <b>OOD verdict</b> column: no ONNX file exported from this checkpoint with an "
            "out-of-distribution gate was found (pass <code>--model</code>)."
        )
    return (
        "<b>OOD verdict</b> is what the out-of-distribution gate of the exported model "
        f"(<code>{_e(evaluation.gate['file'])}</code>) says of the image: <i>refused</i> "
        "images are unlike those the model was trained on, and <code>btxrd-run</code> gives them "
        "no class. They are still counted in every figure of this page, as in the model card; "
        "hover a verdict for its score and threshold."
    )


def _gate_summary(evaluation) -> str:
    if evaluation.gate is None:
        return "none (no matching exported model)"
    refused, total = len(evaluation.refused), len(evaluation.samples)
    gate = evaluation.gate
    return (
        f"{gate['ood_method']}, threshold {gate['ood_threshold']:.4g}: refuses {refused} of "
        f"{total} images ({gate['file']})"
    )


def _gallery_section(
    run: ExplainRun, gallery: GalleryResult, settings: GradcamSettings
) -> _Section:
    classes = report_images.gallery_sections(run, gallery, settings)
    layer = run.explainer.target_layer_name
    body = [
        "<p>Per class: the most confident true positives (TP), the most confident false "
        "positives (FP) and the false negatives (FN) with the lowest probability of the class. "
        "Titles read <code>kind: true -&gt; predicted (probability of the prediction)</code>; "
        f"every heatmap is the {_e(settings.method)} CAM (on {_e(layer)}) of the predicted class. "
        "Tumour TPs show the lesion outline, the CAM's maximum and the IoU; misclassified "
        "tumour images show the outline and the maximum without a score (their CAM is of "
        "another class); Normal images have no annotation, so they show attention only. The "
        "same pictures, captions drawn in, are written beside this report as "
        "<code>gallery_&lt;class&gt;.png</code>.</p>",
        report_images.colour_scale(settings.alpha),
    ]
    for anchor, name, cells in classes:
        body.append(f'<h3 id="{anchor}">{_e(name)}</h3>{cells}')
    parts = (("colour-scale", "Colour scale"), *((anchor, name) for anchor, name, _ in classes))
    return _Section("galleries", "Galleries", body, parts)


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
        f"<p>Accuracy <strong>{_num_ci(metrics['accuracy'], intervals.get('accuracy'))}"
        f"</strong>, macro AUC <strong>{_num_ci(metrics['macro_auc'], intervals.get('macro_auc'))}"
        f"</strong> over {metrics['num_images']} images; expected calibration error "
        f"{_num_ci(metrics.get('ece'), intervals.get('ece'))} ({ECE_BINS} bins). In brackets: 95 % "
        f"bootstrap intervals (images resampled {BOOTSTRAP_RESAMPLES:,} times); a small class has "
        "a wide one.</p>",
        _table(["class", "precision", "recall", "AUC (one vs rest)", "images"], rows),
        '<h3 id="confusion">Confusion matrix</h3>'
        "<p>Rows: true class; columns: predicted class.</p>",
        f'<table><tr><th class="l">true \\ predicted</th>{head}</tr>{cm_rows}</table>',
    ]


def _annotation_section(
    run: ExplainRun, annotations: AnnotationResult, settings: GradcamSettings
) -> _Section:
    report = annotations.report
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
    masks = report["masks"]
    parts = [
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
    sub: tuple[tuple[str, str], ...] = ()
    cases = report_images.comparison_rows(run, annotations, settings)
    if cases:
        sub = (("cases", "Best and worst cases"),)
        parts += [
            '<h3 id="cases">Best and worst cases</h3>',
            "<p>Original, lesion mask, heatmap (colours: the "
            '<a href="#colour-scale">scale above</a>) and overlay of the images whose '
            "best-threshold IoU is highest, then of those where it is lowest. Every image's "
            'scores are in the table of <a href="#images">every image</a>.</p>',
            *cases,
        ]
    return _Section("attention", "Attention vs annotation", parts, sub)


def _warnings(warnings: Sequence[str], failed: Iterable[tuple[str, str]]) -> list[str]:
    items = [*warnings, *(f"{image_id}: {error}" for image_id, error in failed)]
    if not items:
        return []
    return ["<ul>", *(f"<li>{_e(w)}</li>" for w in items), "</ul>"]


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(
            f'<{tag} class="{"l" if i == 0 else ""}">{_e(v)}</{tag}>' for i, v in enumerate(values)
        )

    head = f"<tr>{cells('th', columns)}</tr>" if header else ""
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table>{head}{body}</table>" if header else f'<table class="kv">{body}</table>'


def _num_ci(value: float | None, interval: list[float] | None) -> str:
    """A figure with its 95 % interval, e.g. ``0.961 [0.946, 0.974]``."""
    if value is None:
        return ""
    return _num(value) + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
