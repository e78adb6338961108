"""report.html in a real browser (headless Chromium): every image loads, a screenshot of the whole
page is not blank from top to bottom, the sections stand in the order of the table of contents,
the table of every image has a row and a loaded thumbnail per image, and clicking a column's
heading sorts it (again: the other way, blanks last both ways).

Needs Debian's ``chromium`` package at /usr/bin/chromium (``make chromium`` installs it); skipped
with the reason where it is absent. A probe script is injected into a copy of the report: once
the page has loaded it measures, or clicks and measures, and writes the result as JSON into the
title, which ``--dump-dom`` prints. Screenshots come from ``--screenshot``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="headless Chromium not installed (Debian: apt-get install chromium)",
    ),
]
WIDTH = 1280
# The tallest window the screenshot takes (the tiny fixture's report is about 8,600 px tall).
MAX_HEIGHT = 16_000
_PROBE = (
    "<script>window.addEventListener('load', () => {{ const result = ({body})();"
    "document.title = 'PROBE' + JSON.stringify(result); }});</script>"
)
_COUNT_IMAGES = """() => {
  const all = [...document.images];
  return {loaded: all.filter(i => i.complete && i.naturalWidth > 0).length, total: all.length};
}"""
_LAYOUT = """() => {
  const top = (element) => element.getBoundingClientRect().top + window.scrollY;
  const rows = [...document.querySelectorAll("table.images tbody tr")];
  const thumbnails = rows.map(r => r.querySelector("img")).filter(i => i);
  return {
    height: document.documentElement.scrollHeight,
    warning: top(document.querySelector(".warning")),
    contents: top(document.getElementById("contents")),
    sections: [...document.querySelectorAll("#contents a")].map(a => {
      const target = document.getElementById(a.getAttribute("href").slice(1));
      return [a.getAttribute("href"), target ? top(target) : null];
    }),
    rows: rows.length,
    thumbnails: thumbnails.filter(i => i.complete && i.naturalWidth > 0).length,
    dangling: [...document.querySelectorAll("table.images a")]
      .map(a => a.getAttribute("href")).filter(h => !document.getElementById(h.slice(1))),
  };
}"""
_SORT = """() => {
  const table = document.querySelector("table.images");
  const heads = [...table.tHead.rows[0].cells];
  const column = (title) => heads.findIndex(h => h.textContent.startsWith(title));
  const state = (title) => {
    const c = column(title);
    return {
      rows: [...table.tBodies[0].rows].map(r => r.id),
      values: [...table.tBodies[0].rows].map(r => r.cells[c].dataset.v ?? r.cells[c].textContent),
      sort: heads[c].getAttribute("aria-sort"),
    };
  };
  const click = (title) => {
    heads[column(title)].querySelector("button").click();
    return state(title);
  };
  const first = state("#");
  return {
    first,
    probability: [click("probability"), click("probability")],
    iou: [click("IoU"), click("IoU")],
    image: [click("image"), click("image")],
  };
}"""


def _chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        *arguments,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _probe(page: Path, body: str, tmp_path: Path) -> dict:
    """Run ``body`` (a JavaScript function) on a copy of ``page`` once it has loaded."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", _PROBE.format(body=body) + "</body>"))
    done = _chromium(tmp_path, f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri())
    match = re.search(r"<title>PROBE(.*?)</title>", done.stdout, re.DOTALL)
    assert match, f"the probe did not run; Chromium printed: {done.stdout[:500]}"
    return json.loads(html.unescape(match.group(1)))


def _screenshot(page: Path, height: int, tmp_path: Path) -> np.ndarray:
    """The page at ``WIDTH`` x ``height`` as a grayscale array."""
    shot = tmp_path / f"{page.stem}.png"
    _chromium(tmp_path, f"--window-size={WIDTH},{height}", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == (WIDTH, height)
        return np.asarray(image.convert("L"), dtype=np.float64)


def _blank_bands(pixels: np.ndarray) -> list[int]:
    """Bands of about 1,000 px (top to bottom) of the screenshot with next to nothing drawn in
    them: text, tables and pictures make a band's grey levels vary (a standard deviation of 30
    and more on the report); an empty page or a part the browser never drew is one colour."""
    bands = np.array_split(pixels, max(1, round(len(pixels) / 1000)))
    return [i for i, band in enumerate(bands) if band.std() < 8.0]


@pytest.mark.torch
def test_every_image_of_the_report_loads(report_run, tmp_path) -> None:
    report = report_run.out / "report.html"
    expected = len(re.findall(r"<img ", report.read_text()))
    assert expected >= 24 + 3  # a thumbnail per image, a gallery row per class at least
    assert _probe(report, _COUNT_IMAGES, tmp_path) == {"loaded": expected, "total": expected}


def test_a_broken_image_is_noticed(tmp_path) -> None:
    """The check can fail: a truncated data URI does not load."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head><body>"
        '<img src="data:image/png;base64,iVBORw0KGgo="></body></html>'
    )
    assert _probe(page, _COUNT_IMAGES, tmp_path) == {"loaded": 0, "total": 1}


@pytest.mark.torch
def test_the_page_renders_in_the_order_of_its_contents(report_run, tmp_path) -> None:
    report = report_run.out / "report.html"
    metrics = json.loads((report_run.out / "metrics.json").read_text())
    layout = _probe(report, _LAYOUT, tmp_path)
    # The warning first, then the contents, then every section in the contents' order.
    tops = [layout["warning"], layout["contents"], *(top for _, top in layout["sections"])]
    assert None not in tops, layout["sections"]
    assert tops == sorted(tops) and len(set(tops)) == len(tops), layout["sections"]
    assert layout["warning"] < 200  # at the top, above the fold
    # The table: a row and a loaded thumbnail per evaluated image, every link landing.
    assert layout["rows"] == layout["thumbnails"] == metrics["num_images"]
    assert layout["dangling"] == []
    # The whole page, screenshot: drawn from top to bottom, nothing blank.
    height = layout["height"]
    # Galleries and cases make it tall; the table scrolls in its own box, not the page.
    assert 3_000 < height <= MAX_HEIGHT
    pixels = _screenshot(report, height, tmp_path)
    assert _blank_bands(pixels) == [], f"blank parts in {tmp_path / 'report.png'}"


def test_a_blank_page_is_noticed(tmp_path) -> None:
    """The screenshot check can fail: a page that draws nothing is blank in every band."""
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body></body></html>")
    assert _blank_bands(_screenshot(page, 2000, tmp_path)) == [0, 1]


@pytest.mark.torch
def test_clicking_a_heading_sorts_the_table(report_run, tmp_path) -> None:
    clicks = _probe(report_run.out / "report.html", _SORT, tmp_path)
    first = clicks["first"]
    assert first["sort"] == "ascending"  # written in the order evaluated
    assert first["rows"] == [f"image-{n}" for n in range(1, len(first["rows"]) + 1)]

    up, down = clicks["probability"]
    assert (up["sort"], down["sort"]) == ("ascending", "descending")
    probabilities = [float(v) for v in up["values"]]
    assert probabilities == sorted(probabilities) and len(set(probabilities)) > 1
    assert [float(v) for v in down["values"]] == sorted(probabilities, reverse=True)
    assert sorted(up["rows"]) == sorted(first["rows"]) and up["rows"] != first["rows"]

    # Images without attention figures come last, whichever way.
    for state, descending in zip(clicks["iou"], (False, True), strict=True):
        values = state["values"]
        filled = [float(v) for v in values if v != ""]
        assert filled and values[: len(filled)] == [v for v in values if v != ""]
        assert filled == sorted(filled, reverse=descending)

    # Text sorts as text (numbers within it as numbers).
    up, down = clicks["image"]
    assert up["values"] == sorted(up["values"]) and down["values"] == up["values"][::-1]
