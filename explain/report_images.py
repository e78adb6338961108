"""The pictures of report.html as HTML: one table row per evaluated image (thumbnail, classes,
probability, attention figures, links to every figure that shows the image), the galleries and
the best and worst cases as figures with HTML captions, and one colour scale for all heatmaps.

The gallery and comparison PNG files beside the report keep their drawn captions (other tools
read them). Here each cell is a picture of its own under a ``<figcaption>``, so the text is
selectable and sharp at any zoom. The pictures are drawn from the thumbnails the run keeps (no
image is decoded again) and embedded as JPEG (``render.encode_jpeg``), each encoded once.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from btxrd.explain import render
from btxrd.explain.annotations import AnnotationResult, ImageScore
from btxrd.explain.gallery import GalleryResult
from btxrd.explain.gallery import _views as gallery_views  # the gallery's own cell pictures
from btxrd.explain.run import ExplainRun
from btxrd.explain.selection import KINDS, cell_title
from btxrd.export.data.masks import LesionMask
from btxrd.runtime.labels.sheet import NORMAL
from btxrd.runtime.model.verdict import OodVerdict
from btxrd.runtime.output.overlay import jet
from btxrd.runtime.settings import GradcamSettings

# Thumbnails in the table: 96 px JPEG from the run's 240 px thumbnail, about 1.6 kB each on the
# demo split (an optimised PNG is 3.4 kB and takes ten times as long).
THUMBNAIL = 96
KIND_TITLES = {
    "TP": "True positives: the most confident",
    "FP": "False positives: the most confident",
    "FN": "False negatives: the lowest probability of the class",
}
COMPARISON_ORDER = {"best": "highest", "worst": "lowest"}

# Sorts the table of every image when a column's heading is clicked (again: the other way).
# Inline and self-contained: it reads and reorders the table's rows, nothing else, and fetches
# nothing. Without it the table stays in its written order (the # column).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach((table) => {
  const body = table.tBodies[0];
  table.querySelectorAll("th > button").forEach((button) => {
    const head = button.parentElement;
    const column = head.cellIndex;
    const numeric = head.dataset.type === "num";
    button.addEventListener("click", () => {
      const up = head.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th[aria-sort]").forEach((h) => h.removeAttribute("aria-sort"));
      head.setAttribute("aria-sort", up ? "ascending" : "descending");
      const key = (row) => row.cells[column].dataset.v ?? row.cells[column].textContent.trim();
      const rows = [...body.rows].sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");  // blanks last, either way
        const order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
        return up ? order : -order;
      });
      body.append(...rows);
    });
  });
});
"""


@dataclass(frozen=True)
class Link:
    href: str
    text: str


def row_anchor(index: int) -> str:
    """The id of an image's row (``index`` into the evaluation)."""
    return f"image-{index + 1}"


def gallery_anchor(class_index: int, kind: str, rank: int) -> str:
    return f"gallery-{class_index}-{kind}-{rank}"


def class_anchor(class_index: int) -> str:
    return f"gallery-{class_index}"


def image_table(
    run: ExplainRun,
    gallery: GalleryResult,
    annotations: AnnotationResult,
    iou_threshold: float,
) -> str:
    """Every evaluated image, in the evaluation's order, with its thumbnail."""
    evaluation = run.evaluation
    names = evaluation.class_names
    scores = {s.sample.image_id: s for s in annotations.scores}
    links = _appearances(run, gallery, annotations)
    columns = [
        ("#", "num"),
        ("picture", None),
        ("image", "text"),
        ("true class", "text"),
        ("predicted", "text"),
        ("probability", "num"),
        ("correct", "text"),
        *([("OOD verdict", "text")] if evaluation.gate is not None else []),
        (f"IoU@{iou_threshold:g}", "num"),
        ("best IoU", "num"),
        ("pointing", "text"),
        ("energy in lesion", "num"),
        ("shown in", None),
    ]
    head = "".join(_head(title, kind, i == 0) for i, (title, kind) in enumerate(columns))
    rows = []
    for index, sample in enumerate(evaluation.samples):
        probabilities = evaluation.probabilities[index]
        true, predicted = int(evaluation.y_true[index]), int(evaluation.y_pred[index])
        thumbnail = render.encode_jpeg(render.fit(evaluation.images[index].thumbnail, THUMBNAIL))
        all_classes = ", ".join(f"{n} {p:.3f}" for n, p in zip(names, probabilities, strict=True))
        correct = true == predicted
        cells = [
            f'<td data-v="{index + 1}">{index + 1}</td>',
            f'<td><img class="thumb" src="{thumbnail.data_uri()}" alt="{_e(sample.image_id)}" '
            f'width="{thumbnail.width}" height="{thumbnail.height}"></td>',
            f'<td class="l">{_e(sample.image_id)}</td>',
            f'<td class="l">{_e(names[true])}</td>',
            f'<td class="l">{_e(names[predicted])}</td>',
            f'<td data-v="{probabilities[predicted]:.6f}" title="{_e(all_classes)}">'
            f"{probabilities[predicted]:.3f}</td>",
            f'<td class="l {"ok" if correct else "wrong"}">{"yes" if correct else "no"}</td>',
            *([_verdict_cell(evaluation.verdicts[index])] if evaluation.verdicts else []),
            *_attention_cells(scores.get(sample.image_id)),
            '<td class="l">'
            + ", ".join(f'<a href="#{link.href}">{_e(link.text)}</a>' for link in links[index])
            + "</td>",
        ]
        kind = "" if correct else ' class="wrong"'
        rows.append(f'<tr id="{row_anchor(index)}"{kind}>{"".join(cells)}</tr>')
    return (
        '<div class="scroll"><table class="images sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def gallery_sections(
    run: ExplainRun, gallery: GalleryResult, settings: GradcamSettings
) -> list[tuple[str, str, str]]:
    """(anchor, class name, HTML) per class: a row of captioned figures per kind."""
    evaluation = run.evaluation
    names = evaluation.class_names
    by_id = {s.image_id: i for i, s in enumerate(evaluation.samples)}
    chosen = {
        name: {kind: [by_id[i] for i in gallery.metrics["gallery"][name][kind]] for kind in KINDS}
        for name in names
    }
    shown = sorted({i for rows in chosen.values() for kind in KINDS for i in rows[kind]})
    views = dict(
        zip(
            shown,
            gallery_views(run, shown, settings.method, settings.alpha, settings.iou_threshold, []),
            strict=True,
        )
    )
    pictures = {i: render.encode_jpeg(view.image) for i, view in views.items()}
    sections = []
    for c, name in enumerate(names):
        parts = []
        for kind in KINDS:
            figures = [
                _figure(
                    gallery_anchor(c, kind, rank),
                    pictures[i],
                    _e(evaluation.samples[i].image_id),
                    _gallery_caption(run, kind, c, i, views[i].note),
                )
                for rank, i in enumerate(chosen[name][kind], start=1)
            ]
            parts.append(
                f'<div class="kind"><h4>{kind}: {_e(KIND_TITLES[kind])}</h4>'
                + (f'<div class="cells">{"".join(figures)}</div>' if figures else "<p>none</p>")
                + "</div>"
            )
        sections.append((class_anchor(c), name, "".join(parts)))
    return sections


def comparison_rows(
    run: ExplainRun, annotations: AnnotationResult, settings: GradcamSettings
) -> list[str]:
    """The best and the worst cases, four captioned panels each: original, lesion mask,
    heatmap, overlay (the figures of ``annotation_comparison.png``)."""
    scores = {s.sample.image_id: s for s in annotations.scores}
    by_id = {s.image_id: i for i, s in enumerate(run.evaluation.samples)}
    report = annotations.report
    parts = []
    for which, order in COMPARISON_ORDER.items():
        chosen = [scores[image_id] for image_id in report[f"{which}_cases"]]
        if not chosen:
            continue
        indices = [by_id[s.sample.image_id] for s in chosen]
        parts.append(f"<h4>{which.capitalize()} cases: {order} best-threshold IoU</h4>")
        cams = run.predicted_cams(indices, settings.method)
        for rank, (score, index, result) in enumerate(zip(chosen, indices, cams, strict=True), 1):
            panels = _panels(score, index, run, result.cam, settings)
            parts.append(
                f'<div class="case" id="{which}-{rank}"><div class="rank">#{rank}</div>'
                f'<div class="cells">{"".join(panels)}</div></div>'
            )
    return parts


def colour_scale(alpha: float) -> str:
    """The one legend of every heatmap: JET as the heatmap panels show it, and as the overlays
    blend it over a mid-grey film (the tint's opacity grows with the attention, up to alpha)."""
    stops = np.linspace(0.0, 1.0, 11)
    colours = jet(stops).astype(np.float64)
    blended = (1 - alpha * stops[:, None]) * 128.0 + alpha * stops[:, None] * colours

    def gradient(rgb: np.ndarray) -> str:
        steps = ", ".join(
            f"rgb({r:.0f},{g:.0f},{b:.0f}) {p * 100:.0f}%"
            for (r, g, b), p in zip(rgb, stops, strict=True)
        )
        return f"background:linear-gradient(to right, {steps})"

    return (
        '<div class="legend" id="colour-scale" role="img" aria-label="colour scale: attention '
        'from low (blue) to high (red)"><div class="scale">'
        f'<span>heatmap</span><div class="bar" style="{gradient(colours)}"></div>'
        f'<span>overlay on a grey film</span><div class="bar" style="{gradient(blended)}"></div>'
        '<span></span><div class="ends"><span>low attention</span><span>high</span></div>'
        "</div><p>Each map is scaled to its own range (0 = its lowest, 1 = its highest "
        f"attention). On the overlays the tint's opacity grows with the attention, up to "
        f"{alpha:g}: where the model paid little attention the film shows untinted. "
        '<span class="outline">White outline</span>: the annotated lesion. '
        '<span class="peak">Green cross</span>: the map\'s maximum. '
        f"A map of {NORMAL} marks the film the model read as healthy; it does not "
        "point at a lesion.</p></div>"
    )


def _appearances(
    run: ExplainRun, gallery: GalleryResult, annotations: AnnotationResult
) -> dict[int, list[Link]]:
    """Every figure of the page that shows each image, by evaluation index."""
    evaluation = run.evaluation
    by_id = {s.image_id: i for i, s in enumerate(evaluation.samples)}
    links: dict[int, list[Link]] = defaultdict(list)
    for c, name in enumerate(evaluation.class_names):
        for kind in KINDS:
            for rank, image_id in enumerate(gallery.metrics["gallery"][name][kind], start=1):
                links[by_id[image_id]].append(Link(gallery_anchor(c, kind, rank), f"{name} {kind}"))
    for which in COMPARISON_ORDER:
        for rank, image_id in enumerate(annotations.report[f"{which}_cases"], start=1):
            links[by_id[image_id]].append(Link(f"{which}-{rank}", f"{which} case #{rank}"))
    return links


def _verdict_cell(verdict: OodVerdict) -> str:
    """The gate's word: "in" or "refused", the score against the threshold on hover."""
    text = "in distribution" if verdict.in_distribution else "refused"
    detail = f"OOD score {verdict.score:.4g}, threshold {verdict.threshold:.4g} ({verdict.method})"
    kind = "ok" if verdict.in_distribution else "wrong"
    return f'<td class="l {kind}" title="{_e(detail)}">{text}</td>'


def _attention_cells(score: ImageScore | None) -> list[str]:
    """IoU, best IoU (at its threshold), pointing game, energy; blank where not scored (with the
    reason on the first cell, where there is one)."""
    if score is None or score.scores is None:
        reason = score.reason if score is not None else None
        first = f'<td data-v="" title="{_e(reason)}">n/a</td>' if reason else '<td data-v=""></td>'
        return [
            first,
            '<td data-v=""></td>',
            '<td class="l" data-v=""></td>',
            '<td data-v=""></td>',
        ]
    s, mask = score.scores, score.mask
    built = "" if mask is None else f' title="{_e(_mask_text(mask))}"'
    return [
        f'<td data-v="{s.iou:.6f}"{built}>{s.iou:.3f}</td>',
        f'<td data-v="{s.iou_best:.6f}">{s.iou_best:.3f} @{s.best_threshold:g}</td>',
        f'<td class="l">{_pointing(s.pointing_hit, s.pointing_reachable)}</td>',
        f'<td data-v="{s.energy_in_lesion:.6f}" title="lesion share of the image '
        f'{s.lesion_fraction:.3f}">{s.energy_in_lesion:.3f}</td>',
    ]


def _gallery_caption(run: ExplainRun, kind: str, class_index: int, index: int, note: str) -> str:
    evaluation = run.evaluation
    names = evaluation.class_names
    true, predicted = int(evaluation.y_true[index]), int(evaluation.y_pred[index])
    probabilities = evaluation.probabilities[index]
    lines = [
        f"<strong>{_e(cell_title(kind, names[true], names[predicted], probabilities[predicted]))}"
        "</strong>",
        _row_link(run, index),
    ]
    if kind == "FN":
        lines[-1] += f", p({_e(names[class_index])}) {probabilities[class_index]:.2f}"
    if note:
        lines.append(_e(note))
    return "<br>".join(lines)


def _panels(
    score: ImageScore, index: int, run: ExplainRun, cam: np.ndarray, settings: GradcamSettings
) -> list[str]:
    """Original, lesion mask, heatmap and overlay of one scored image, each with its caption."""
    image = run.evaluation.images[index].thumbnail
    s, mask = score.scores, score.mask
    assert s is not None and mask is not None and mask.mask is not None  # ranked: scored
    size = render.display_size(image.size)
    built = _mask_text(mask)
    image_id = score.sample.image_id
    return [
        _figure(
            None,
            render.encode_jpeg(render.thumbnail(image)),
            f"{_e(image_id)}: original",
            f"{_row_link(run, index)}<br>{_e(score.label)} ({score.confidence:.2f})",
        ),
        _figure(
            None,
            render.encode_jpeg(render.mask_view(mask.mask, size)),
            f"{_e(image_id)}: lesion mask",
            f"lesion mask<br>{_e(built)}",
        ),
        _figure(
            None,
            render.encode_jpeg(render.heatmap(cam, size)),
            f"{_e(image_id)}: heatmap",
            f"{_e(settings.method)} of {_e(score.label)}<br>"
            '<a href="#colour-scale">colour scale</a>',
        ),
        _figure(
            None,
            render.encode_jpeg(render.attention(image, cam, settings.alpha, mask.mask)),
            f"{_e(image_id)}: overlay",
            f"IoU@{settings.iou_threshold:g} {s.iou:.2f}, best {s.iou_best:.2f} "
            f"@{s.best_threshold:g}<br>pointing {_pointing(s.pointing_hit, s.pointing_reachable)}"
            f", energy {s.energy_in_lesion:.2f} (area {s.lesion_fraction:.2f})",
        ),
    ]


def _figure(anchor: str | None, picture: render.Jpeg, alt: str, caption: str) -> str:
    """A cell: the picture and its caption (``alt`` and ``caption`` already escaped HTML)."""
    ident = f' id="{anchor}"' if anchor else ""
    return (
        f'<figure class="cell"{ident}><img src="{picture.data_uri()}" alt="{alt}" '
        f'width="{picture.width}" height="{picture.height}"><figcaption>{caption}</figcaption>'
        "</figure>"
    )


def _row_link(run: ExplainRun, index: int) -> str:
    image_id = run.evaluation.samples[index].image_id
    return f'<a href="#{row_anchor(index)}">{_e(image_id)}</a>'


def _mask_text(mask: LesionMask) -> str:
    text = f"mask from {mask.polygons} polygon(s)"
    if mask.rectangles:
        text += f" and {mask.rectangles} rectangle(s) of lesions without one (overstated)"
    return text


def _pointing(hit: bool, reachable: bool | None) -> str:
    if hit:
        return "hit"
    return "miss (unreachable)" if reachable is False else "miss"


def _head(title: str, kind: str | None, current: bool) -> str:
    """A column heading; a sortable one is a button (keyboard and screen readers reach it)."""
    classes = ' class="l"' if kind == "text" or kind is None else ""
    if kind is None:
        return f"<th{classes}>{_e(title)}</th>"
    state = ' aria-sort="ascending"' if current else ""
    return f'<th{classes} data-type="{kind}"{state}><button type="button">{_e(title)}</button></th>'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
