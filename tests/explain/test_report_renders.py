"""report.html renders in a real browser and every image in it loads (headless Chromium).

Needs Debian's ``chromium`` package at /usr/bin/chromium (the project's setup installs it for this
test); skipped with the reason where it is absent. A small script is injected into a copy of the
report (the report itself has none) that sets the title to "loaded N of M" once the page has
loaded, and ``--dump-dom`` prints the result.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="headless Chromium not installed (Debian: apt-get install chromium)",
    ),
]
_COUNTER = (
    "<script>window.addEventListener('load', () => {"
    "const all = [...document.images];"
    "const ok = all.filter(i => i.complete && i.naturalWidth > 0);"
    "document.title = `loaded ${ok.length} of ${all.length}`;});</script>"
)


def _loaded_images(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(images loaded, images on the page) as Chromium sees them."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", _COUNTER + "</body>"))
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
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"<title>loaded (\d+) of (\d+)</title>", done.stdout)
    assert match, f"the counter did not run; Chromium printed: {done.stdout[:500]}"
    return int(match.group(1)), int(match.group(2))


@pytest.mark.torch
def test_every_image_of_the_report_loads(report_run, tmp_path) -> None:
    report = report_run.out / "report.html"
    expected = len(re.findall(r"<img ", report.read_text()))
    assert expected >= 3  # one gallery per class at least
    assert _loaded_images(report, tmp_path) == (expected, expected)


def test_a_broken_image_is_noticed(tmp_path) -> None:
    """The check can fail: a truncated data URI does not load."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head><body>"
        '<img src="data:image/png;base64,iVBORw0KGgo="></body></html>'
    )
    assert _loaded_images(page, tmp_path) == (0, 1)
