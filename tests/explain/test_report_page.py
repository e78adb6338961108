"""What report.html holds, read from its text with the standard library's HTML parser: a table
of contents whose links all land, one table row per evaluated image with its thumbnail and
links to the figures that show it, captions as text, one colour scale, a reasonable size, and
image ids escaped. (test_report_renders.py checks the same page in a real browser.)"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from btxrd.explain import report_images
from btxrd.explain.annotations import AnnotationResult
from btxrd.explain.evaluate import Evaluation, SampleImage
from btxrd.explain.gallery import GalleryResult
from btxrd.explain.model import load_explainer
from btxrd.explain.run import ExplainRun
from btxrd.export.data.dataset import load_dataset
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.settings import GradcamSettings

pytestmark = [pytest.mark.torch, pytest.mark.slow]
CLASSES = ("Normal", "Benign", "Malignant")
KINDS = ("TP", "FP", "FN")


class _Page(HTMLParser):
    """Ids, links, the contents' links, table rows (their cells' text, pictures and links) and
    figures (picture and caption text) of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.links: list[str] = []
        self.contents: list[str] = []
        self.headings: list[str] = []  # ids of the h2s, in order
        self.rows: dict[str, dict] = {}
        self.figures: list[dict] = []
        self.order: list[str] = []  # the ids of a few landmarks, in page order
        self._stack: list[str] = []
        self._row: dict | None = None
        self._cell: list[str] | None = None
        self._figure: dict | None = None
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in ("img", "br", "meta", "link"):
            self._stack.append(tag)
        if a.get("id"):
            self.ids.append(a["id"])
        if a.get("class") == "warning" or (tag == "nav" and a.get("id") == "contents"):
            self.order.append(a.get("id") or "warning")
        if tag == "h2" and a.get("id"):
            self.headings.append(a["id"])
        if tag == "a" and (a.get("href") or "").startswith("#"):
            self.links.append(a["href"][1:])
            if "nav" in self._stack:
                self.contents.append(a["href"][1:])
            if self._row is not None:
                self._row["links"].append(a["href"][1:])
            if self._figure is not None:
                self._figure["links"].append(a["href"][1:])
        if tag == "tr" and (a.get("id") or "").startswith("image-"):
            self._row = {"cells": [], "pictures": [], "links": [], "class": a.get("class")}
            self.rows[a["id"]] = self._row
        if tag == "td" and self._row is not None:
            self._cell = []
        if tag == "img" and self._row is not None:
            self._row["pictures"].append(a)
        if tag == "figure":
            self._figure = {"id": a.get("id"), "pictures": [], "caption": "", "links": []}
            self.figures.append(self._figure)
        if tag == "img" and self._figure is not None:
            self._figure["pictures"].append(a)
        if tag == "figcaption":
            self._caption = True

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "figcaption":
            self._caption = False
        if tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._caption and self._figure is not None:
            self._figure["caption"] += data


@pytest.fixture(scope="module")
def page(report_run) -> _Page:
    assert report_run.exit_code == 0, report_run.stderr
    return _Page((report_run.out / "report.html").read_text())


@pytest.fixture(scope="module")
def metrics(report_run) -> dict:
    return json.loads((report_run.out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def scored(report_run) -> dict:
    return json.loads((report_run.out / "annotation_report.json").read_text())


def _picture(attrs: dict) -> Image.Image:
    header, data = attrs["src"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    picture.load()
    assert (picture.width, picture.height) == (int(attrs["width"]), int(attrs["height"]))
    return picture


def test_warning_and_contents_come_first_and_every_link_lands(page: _Page) -> None:
    assert page.order == ["warning", "contents"]
    assert len(page.ids) == len(set(page.ids))  # ids are unique
    assert set(page.links) <= set(page.ids)  # every in-page link lands somewhere
    # The contents list every section, in the page's order, with their subsections.
    assert [link for link in page.contents if link in page.headings] == page.headings
    assert page.headings[:5] == ["model", "classification", "images", "galleries", "attention"]
    for c in range(len(CLASSES)):
        assert f"gallery-{c}" in page.contents
    assert "cases" in page.contents  # the seeded fixture scores some images


def test_one_row_per_image_with_its_thumbnail_and_prediction(page: _Page, metrics) -> None:
    rows = list(page.rows.values())
    assert list(page.rows) == [f"image-{n}" for n in range(1, metrics["num_images"] + 1)]
    pairs: Counter[tuple[str, str]] = Counter()
    for number, row in enumerate(rows, start=1):
        (thumbnail,) = row["pictures"]
        assert max(_picture(thumbnail).size) == 96
        cells = row["cells"]
        assert cells[0] == str(number)
        true, predicted, probability, correct = cells[3], cells[4], float(cells[5]), cells[6]
        assert true in CLASSES and predicted in CLASSES
        assert 1 / len(CLASSES) <= probability <= 1.0  # the prediction is the most probable
        assert correct == ("yes" if true == predicted else "no")
        assert (row["class"] == "wrong") == (true != predicted)
        pairs[(true, predicted)] += 1
    # The rows' classes add up to the confusion matrix of metrics.json.
    for i, true in enumerate(CLASSES):
        for j, predicted in enumerate(CLASSES):
            assert pairs[(true, predicted)] == metrics["confusion_matrix"][i][j]


def test_rows_carry_the_attention_figures_of_the_annotation_report(page: _Page, scored) -> None:
    by_id = {row["cells"][2]: row for row in page.rows.values()}
    records = {record["image_id"]: record for record in scored["per_image"]}
    for image_id, row in by_id.items():
        iou, best, pointing, energy = row["cells"][7:11]
        record = records.get(image_id)
        if record is None:  # not a correctly classified, annotated tumour: not scored
            assert (iou, best, pointing, energy) == ("", "", "", "")
        elif record["iou"] is None:  # scored, but its CAM or mask was unusable
            assert iou == "n/a" and (best, pointing, energy) == ("", "", "")
        else:
            assert iou == f"{record['iou']:.3f}"
            assert best == f"{record['iou_best']:.3f} @{record['best_threshold']:g}"
            assert pointing.startswith("hit" if record["pointing_hit"] else "miss")
            assert energy == f"{record['energy_in_lesion']:.3f}"


def test_rows_link_to_every_figure_that_shows_them(page: _Page, metrics, scored) -> None:
    row_of = {row["cells"][2]: anchor for anchor, row in page.rows.items()}
    figures = {f["id"]: f for f in page.figures if f["id"]}
    expected: dict[str, set[str]] = {anchor: set() for anchor in page.rows}
    for c, name in enumerate(CLASSES):
        for kind in KINDS:
            for rank, image_id in enumerate(metrics["gallery"][name][kind], start=1):
                anchor = f"gallery-{c}-{kind}-{rank}"
                figure = figures[anchor]
                assert image_id in figure["caption"]  # the caption is text, with the image id
                assert figure["caption"].startswith(f"{kind}: ")
                assert figure["links"] == [row_of[image_id]]  # ... linking back to its row
                expected[row_of[image_id]].add(anchor)
    for which in ("best", "worst"):
        for rank, image_id in enumerate(scored[f"{which}_cases"], start=1):
            assert f"{which}-{rank}" in page.ids
            expected[row_of[image_id]].add(f"{which}-{rank}")
    for anchor, row in page.rows.items():
        assert set(row["links"]) == expected[anchor], anchor


def test_figures_have_text_captions_and_one_colour_scale(report_run, page: _Page, scored) -> None:
    html = (report_run.out / "report.html").read_text()
    gallery_figures = [f for f in page.figures if (f["id"] or "").startswith("gallery-")]
    panels = [f for f in page.figures if not f["id"]]
    cases = len(scored["best_cases"]) + len(scored["worst_cases"])
    assert cases >= 1 and len(panels) == 4 * cases  # original, mask, heatmap, overlay
    for figure in gallery_figures + panels:
        (picture,) = figure["pictures"]
        assert max(_picture(picture).size) <= 240
        assert figure["caption"].strip()
    assert html.count('id="colour-scale"') == 1
    assert html.count("linear-gradient") == 2  # one legend: the heatmap and the overlay tint


def test_report_size_stays_reasonable(report_run, page: _Page) -> None:
    """Thumbnails are a few kB each; the page is well below a megabyte for 24 images (it was
    383 kB when written, gallery and panel cells included)."""
    html = (report_run.out / "report.html").read_bytes()
    thumbnails = [
        len(base64.b64decode(r["pictures"][0]["src"].split(",", 1)[1])) for r in page.rows.values()
    ]
    assert max(thumbnails) < 6_000
    assert len(html) < 800_000


def test_image_ids_are_escaped(synth_data, tiny_checkpoint) -> None:
    """An image id is a file name, chosen by whoever made the folder: it is text on the page,
    never markup, in the table and in the captions."""
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>.png'
    sample = load_dataset(synth_data)[0]
    explainer = load_explainer(tiny_checkpoint)
    evaluation = Evaluation(
        samples=(replace(sample, image_id=hostile),),
        images=(SampleImage.from_image(load_image(sample.image_path).image, explainer.prep),),
        y_true=np.array([0]),
        probabilities=np.array([[0.2, 0.7, 0.1]]),
        class_names=CLASSES,
        subset="constructed",
    )
    run = ExplainRun(explainer, evaluation)
    membership = {kind: [] for kind in KINDS}
    gallery = GalleryResult(
        figures={},
        paths={},
        metrics={
            "gallery": {
                n: {**membership, "FP": [hostile] if n == "Benign" else []} for n in CLASSES
            }
        },
    )
    annotations = AnnotationResult(
        report={"best_cases": [], "worst_cases": []}, scores=(), comparison=None, paths={}
    )
    table = report_images.image_table(run, gallery, annotations, 0.5)
    sections = report_images.gallery_sections(run, gallery, GradcamSettings())
    for text in [table, *(cells for _, _, cells in sections)]:
        assert "<script>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    assert any(hostile in f["caption"] for f in _Page(sections[1][2]).figures)
    assert re.search(r'<tr id="image-1"', table)
