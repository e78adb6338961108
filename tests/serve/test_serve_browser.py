"""The page in a real browser (Debian's chromium through Playwright, no browser download): drop a
radiograph, see its class and heatmap, move the slider, change the class, pick several files,
sort the table, download the results; nothing is fetched from anywhere but the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from page_driver import (
    drop_files,
    needs_chromium,
    open_page,
    pick_files,
    screenshot,
    set_opacity,
    wait_for_heatmap,
    wait_for_rows,
)
from serve_support import classify_paths, sample_images

pytest.importorskip("starlette")
pytest.importorskip("playwright")
pytestmark = needs_chromium()


def _text(page, selector: str) -> str:
    return page.inner_text(selector).strip()


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#results tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent)"
    )


def test_drop_see_slide_pick_sort_download(server, tmp_path):
    samples = sample_images()
    first, more = samples[4], [samples[0], samples[2], samples[5]]
    _, expected = classify_paths(server, [first, *more])
    by_name = {r["image_name"]: r for r in expected["results"]}
    with open_page(server.url) as browsing:
        page = browsing.page
        banner = _text(page, "#banner")
        assert banner.startswith("Not for clinical use.")
        assert expected["model"]["intended_use"] in banner

        drop_files(browsing, [first])
        wait_for_rows(browsing, 1)
        wait_for_heatmap(browsing)
        record = by_name[first.name]
        assert _text(page, "#detail-name") == first.name
        assert _column(page, 1) == [record["prediction"]]
        assert _column(page, 2) == [f"{record['confidence']:.3f}"]
        assert "Like the images the model was trained on" in _text(page, "#verdict")
        bars = page.eval_on_selector_all(
            "#bars .bar", "bars => bars.map(b => b.getAttribute('aria-label'))"
        )
        assert bars == [f"{c} {p:.3f}" for c, p in record["scores"].items()]
        assert page.input_value("#cam-class") == record["prediction"]

        set_opacity(browsing, 0.8)
        opacity = page.eval_on_selector("#layer", "l => getComputedStyle(l).opacity")
        assert float(opacity) == pytest.approx(0.8)
        assert _text(page, "#opacity-value") == "0.80"

        others = [
            c
            for c in page.eval_on_selector_all("#cam-class option", "o => o.map(x => x.value)")
            if c != record["prediction"]
        ]
        if others:
            page.select_option("#cam-class", others[0])
            wait_for_heatmap(browsing)
            assert f"/heatmap/{others[0]}.png" in page.get_attribute("#layer", "src")
            assert float(page.eval_on_selector("#layer", "l => getComputedStyle(l).opacity")) == (
                pytest.approx(0.8)
            )

        pick_files(browsing, more)
        wait_for_rows(browsing, 4)
        names = _column(page, 0)
        assert sorted(names) == sorted(p.name for p in [first, *more])
        page.click("#results th[data-key='confidence']")
        ascending = [float(x) for x in _column(page, 2)]
        assert ascending == sorted(ascending)
        page.click("#results th[data-key='confidence']")
        descending = [float(x) for x in _column(page, 2)]
        assert descending == sorted(ascending, reverse=True)
        page.click(f"#results tbody tr[data-name='{more[1].name}']")
        wait_for_heatmap(browsing)
        assert _text(page, "#detail-name") == more[1].name

        with page.expect_download() as download:
            page.click("#download-json")
        document = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert {r["image_name"] for r in document["results"]} == set(by_name)
        for served in document["results"]:
            assert served["scores"] == pytest.approx(by_name[served["image_name"]]["scores"])
        with page.expect_download() as download:
            page.click("#download-csv")
        csv_text = Path(download.value.path()).read_text(encoding="utf-8")
        header = csv_text.splitlines()[0]
        assert header.startswith("image_name,path,path_escaped,prediction,confidence")
        assert len(csv_text.splitlines()) == 5

        shot = screenshot(browsing, tmp_path / "page.png")
        assert shot.stat().st_size > 10_000
        assert browsing.outside == []


def test_a_bad_file_and_a_hostile_name_show_as_text(server):
    with open_page(server.url) as browsing:
        page = browsing.page
        bad = Path(server.tmpdir).parent / "<img src=x onerror=alert(1)>.png"
        bad.write_bytes(b"patient list\n")
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        drop_files(browsing, [bad])
        wait_for_rows(browsing, 1)
        assert _column(page, 1) == ["error"]
        assert "not an image file btxrd reads" in _text(page, "#detail-error")
        assert _text(page, "#detail-name") == bad.name
        assert page.is_hidden("#viewer")
        assert dialogs == [] and page.query_selector("#results img") is None
        assert browsing.outside == []
