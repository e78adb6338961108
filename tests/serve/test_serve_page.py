"""The page as a radiologist meets it (Debian's chromium through Playwright): a refused image shows
no number and says in plain words what happened; the page fits every width from a phone to a
wide screen; everything works from the keyboard; axe-core finds no serious or critical problem.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from page_driver import (
    CHROMIUM,
    drop_files,
    needs_chromium,
    open_page,
    pick_files,
    wait_for_heatmap,
    wait_until,
)
from PIL import Image
from serve_support import REPO_ROOT, request, sample_images

pytest.importorskip("starlette")
pytest.importorskip("playwright")
pytestmark = needs_chromium()

# Installed by `make axe` (npm, no network at test time).
AXE = REPO_ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (360, 800, 1024, 1920)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A colourful picture that is no radiograph: the demo model's gate refuses it."""
    x = np.linspace(0, 1, 400)[None, :]
    y = np.linspace(0, 1, 300)[:, None]
    rgb = np.dstack([x + 0 * y, y + 0 * x, x * y]) * 255
    path = tmp_path_factory.mktemp("photo") / "holiday.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def small_film(tmp_path_factory) -> Path:
    """A 149 x 357 film (a small one the page once showed tiny)."""
    path = tmp_path_factory.mktemp("small") / "small-film.png"
    Image.open(sample_images()[0]).convert("L").resize((149, 357)).save(path)
    return path


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "notes.png"
    path.write_bytes(b"patient list\n")
    return path


def _rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#results tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )


def _wait_for_rows(browsing, count: int) -> None:
    wait_until(
        browsing,
        f"() => document.querySelectorAll('#results tbody tr').length === {count} && "
        "!document.getElementById('status').textContent.includes('Classifying')",
        f"{count} result rows",
    )


def _visible(page, selector: str) -> bool:
    return page.is_visible(selector)


def test_a_refused_image_shows_no_number_and_says_what_to_do(server, photo, not_an_image):
    sample = sample_images()[0]
    with open_page(server.url) as browsing:
        page = browsing.page
        drop_files(browsing, [sample])
        _wait_for_rows(browsing, 1)
        wait_for_heatmap(browsing)
        assert _visible(page, "#controls") and _visible(page, "#bars")

        drop_files(browsing, [photo])
        _wait_for_rows(browsing, 2)
        # The newest upload opens, and nothing of the previous image is left on screen.
        assert page.inner_text("#detail-name") == photo.name
        assert _visible(page, "#refusal")
        explanation = page.inner_text("#refusal")
        assert "Not classified" in explanation
        assert "unlike the images the model was trained on, so it gives no class" in explanation
        assert "demo model was trained on synthetic images only" in explanation
        for hidden in ("#bars", "#viewer", "#controls", "#cam-caption", "#overlay-link"):
            assert not _visible(page, hidden), hidden
        assert page.get_attribute("#overlay-link", "href") is None
        # No probability anywhere in the panel or the row; the OOD figure only behind Details.
        panel = page.inner_text("#detail")
        assert "OOD score" not in panel and not any(ch.isdigit() for ch in panel), panel
        row = next(r for r in _rows(page) if r[0] == photo.name)
        assert row[1] == "not classified" and row[2] == ""
        page.click("#more summary")
        assert "OOD score" in page.inner_text("#more-text")
        assert page.inner_text("#more-text").count("not classified") == 1

        drop_files(browsing, [not_an_image])
        _wait_for_rows(browsing, 3)
        assert "not an image file btxrd reads" in page.inner_text("#detail-error")
        assert not _visible(page, "#refusal") and not _visible(page, "#controls")
        status = page.inner_text("#status")
        assert status.startswith("1 classified, 1 not classified, 1 failed."), status
        assert browsing.outside == []


def test_same_file_replaces_its_row_clear_and_the_samples(server):
    samples = sample_images()
    with open_page(server.url) as browsing:
        page = browsing.page
        drop_files(browsing, [samples[0]])
        _wait_for_rows(browsing, 1)
        film = page.get_attribute("#film", "src")
        drop_files(browsing, [samples[0]])  # the same file again
        _wait_for_rows(browsing, 1)
        assert [r[0] for r in _rows(page)] == [samples[0].name]

        page.click("#samples")
        shipped = sorted(
            p.name for p in (REPO_ROOT / "models" / "samples").iterdir() if p.is_file()
            and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
        )  # fmt: skip
        _wait_for_rows(browsing, 1 + len(shipped))
        assert sorted(r[0] for r in _rows(page)) == sorted([samples[0].name, *shipped])
        assert page.inner_text("#detail-name") in shipped  # the newest result opens

        page.click("#clear")
        _wait_for_rows(browsing, 0)
        assert page.is_hidden("#detail") and page.inner_text("#status") == ""
        wait_until(browsing, "() => document.activeElement.id === 'drop'", "focus on the drop zone")
        status, _, _ = request(server, "GET", film)
        assert status == 404  # the server forgot the pictures too


def test_every_action_works_by_keyboard(server):
    samples = sample_images()[:3]
    with open_page(server.url) as browsing:
        page = browsing.page
        # Listening before any key is pressed: Playwright turns on its interception of the
        # chooser when a listener is added, and a chooser opened before that is never seen.
        choosers: list = []
        page.on("filechooser", lambda chooser: choosers.append(chooser))
        # Tab from the top of the page reaches the drop zone; Enter opens the file chooser.
        page.keyboard.press("Tab")
        wait_until(browsing, "() => document.activeElement.id === 'drop'", "focus on drop")
        outline = page.eval_on_selector("#drop", "e => getComputedStyle(e).outlineStyle")
        assert outline != "none"  # the focus is visible
        page.keyboard.press("Enter")
        deadline = time.monotonic() + 30
        while not choosers:
            assert time.monotonic() < deadline, "Enter on the drop zone opened no file chooser"
            page.wait_for_timeout(50)
        choosers[0].set_files([str(p) for p in samples])
        _wait_for_rows(browsing, 3)
        # Sort by a heading with the keyboard.
        page.focus("#results th[data-key='name'] button")
        page.keyboard.press("Enter")
        assert page.get_attribute("#results th[data-key='name']", "aria-sort") == "ascending"
        names = [r[0] for r in _rows(page)]
        assert names == sorted(names)
        # Tab to the first row and open it with Enter, the second with Space.
        page.focus("#results tbody tr:first-child")
        page.keyboard.press("Enter")
        assert page.inner_text("#detail-name") == names[0]
        page.keyboard.press("Tab")
        page.keyboard.press(" ")
        assert page.inner_text("#detail-name") == names[1]
        wait_for_heatmap(browsing)


def test_a_small_film_is_scaled_to_the_panel(server, small_film):
    with open_page(server.url) as browsing:
        page = browsing.page
        pick_files(browsing, [small_film])
        _wait_for_rows(browsing, 1)
        wait_until(
            browsing,
            "() => parseFloat(document.getElementById('film').style.width) > 0",
            "the film sized",
        )
        shown = page.eval_on_selector("#film", "f => f.getBoundingClientRect().height")
        assert shown > 357 * 1.4  # scaled up, not shown at 149 x 357
        layer = page.eval_on_selector("#layer", "l => l.getBoundingClientRect().height")
        assert layer == pytest.approx(shown, abs=1)


@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_cut_off_at_any_width(server, photo, width, tmp_path):
    samples = sample_images()
    with open_page(server.url, viewport={"width": width, "height": 800}) as browsing:
        page = browsing.page
        drop_files(browsing, [photo])
        pick_files(browsing, samples[:3])
        _wait_for_rows(browsing, 4)
        wait_for_heatmap(browsing)
        page.screenshot(path=str(tmp_path / f"page-{width}.png"), full_page=True)
        overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"{overflow[0]} px wide in a {overflow[1]} px window"
        # Every cell and the panel lie inside the window.
        right = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll("
            "'#results td, #results th, #detail, #verdict, #bars, #film')]"
            ".map(e => e.getBoundingClientRect().right))"
        )
        assert right <= width + 0.5
        stacked = page.evaluate(
            "() => document.querySelector('.detail').getBoundingClientRect().top >"
            " document.querySelector('.list').getBoundingClientRect().bottom - 1"
        )
        assert stacked == (width < 900)


@pytest.mark.skipif(not AXE.is_file(), reason=f"axe-core not installed ({AXE}; make axe)")
def test_axe_core_finds_no_serious_problem(server, photo):
    samples = sample_images()
    with open_page(server.url, bypass_csp=True) as browsing:
        page = browsing.page
        drop_files(browsing, [photo])
        pick_files(browsing, samples[:2])
        _wait_for_rows(browsing, 3)
        wait_for_heatmap(browsing)
        page.add_script_tag(path=str(AXE))
        found = page.evaluate("async () => (await axe.run()).violations")
        serious = [v for v in found if v["impact"] in ("serious", "critical")]
        assert serious == [], json.dumps(
            [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in serious]
        )


def test_a_form_on_another_site_gets_403(server, tmp_path):
    """A page on another origin (another port here) whose form posts a results document to the
    export, as a web page anywhere could while this server runs: the browser gets 403 and
    saves nothing (before, it saved the CSV)."""
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    target = f"{server.url}api/export?format=csv"
    page_html = (
        f'<form method="POST" action="{target}" enctype="text/plain">'
        '<input name=\'{"results": [], "x": "\' value=\'"}\'></form>'
        "<script>document.forms[0].submit()</script>"
    )
    (tmp_path / "index.html").write_text(page_html, encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless"])
            try:
                context = browser.new_context(accept_downloads=True)
                page = context.new_page()
                downloads: list = []
                page.on("download", lambda d: downloads.append(d))
                with page.expect_response(lambda r: r.url == target) as answered:
                    page.goto(f"http://localhost:{elsewhere.server_address[1]}/index.html")
                response = answered.value
                assert response.status == 403
                assert "cross-site request refused" in response.text()
                assert downloads == []
            finally:
                browser.close()
    finally:
        elsewhere.shutdown()
