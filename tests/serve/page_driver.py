"""Drive btxrd-serve's page in Debian's chromium with Playwright, as a person would: drop a
radiograph, wait for its class and heatmap, move the slider, pick more files, sort the table.

The browser test uses it, and so does the README's screenshot: run
``python tests/serve/page_driver.py docs/serve.png`` (``make screenshot``) to refresh that
picture with the same code path. Every request not to the server is blocked and counted.
"""

from __future__ import annotations

import base64
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1180, "height": 760}


def needs_chromium() -> list:
    """The marks of a browser test: slow, and skipped with the reason where chromium is absent."""
    import pytest

    return [
        pytest.mark.slow,
        pytest.mark.skipif(
            shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
            reason="headless Chromium not installed (Debian: apt-get install chromium; "
            "make chromium)",
        ),
    ]


TIMEOUT_MS = 60_000


@dataclass
class Browsing:
    """The page, and every request that tried to leave the server (blocked)."""

    page: Any
    base_url: str
    outside: list[str] = field(default_factory=list)


@contextmanager
def open_page(
    base_url: str, *, viewport: dict[str, int] | None = None, bypass_csp: bool = False
) -> Iterator[Browsing]:
    """Chromium on ``base_url``; any request elsewhere is aborted and recorded.
    ``bypass_csp``: let a test inject a script file (axe-core) the page's policy would block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport=viewport or VIEWPORT, accept_downloads=True, bypass_csp=bypass_csp
            )
            context.set_default_timeout(TIMEOUT_MS)
            browsing = Browsing(context.new_page(), base_url)

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(base_url):
                    route.continue_()
                else:
                    browsing.outside.append(url)
                    route.abort()

            context.route("**/*", guard)
            browsing.page.goto(base_url)
            wait_until(
                browsing,
                "() => document.getElementById('model').textContent.startsWith('Model ')",
                "the model line",
            )
            yield browsing
        finally:
            browser.close()


def drop_files(browsing: Browsing, paths: Sequence[Path]) -> None:
    """Drop ``paths`` on the drop zone (a real drop event carrying File objects)."""
    files = [
        {
            "name": p.name,
            "data": base64.b64encode(p.read_bytes()).decode("ascii"),
            "modified": int(p.stat().st_mtime * 1000),  # as a browser reads it from the disk
        }
        for p in paths
    ]
    transfer = browsing.page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, { lastModified: f.modified }));
            }
            return transfer;
        }""",
        files,
    )
    browsing.page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def pick_files(browsing: Browsing, paths: Sequence[Path]) -> None:
    """Choose ``paths`` with the page's file picker."""
    browsing.page.set_input_files("#files", [str(p) for p in paths])


def wait_until(browsing: Browsing, predicate: str, what: str, timeout_s: float = 60) -> None:
    """Poll ``predicate`` (a JavaScript function) until it is true, or fail after the deadline.

    Playwright's own ``wait_for_function`` evaluates its predicate with ``eval``, which the
    page's content security policy forbids (as it should); ``evaluate`` goes through the
    DevTools protocol, which the policy does not govern.
    """
    deadline = time.monotonic() + timeout_s
    while not browsing.page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not show {what} within {timeout_s:g} s")
        browsing.page.wait_for_timeout(50)


def wait_for_rows(browsing: Browsing, count: int) -> None:
    wait_until(
        browsing,
        f"() => document.querySelectorAll('#results tbody tr').length >= {count} && "
        "document.getElementById('status').textContent.includes('Click a row to see it')",
        f"{count} result rows",
    )


def wait_for_heatmap(browsing: Browsing) -> None:
    """The film and the heatmap layer are loaded (decoded pictures, not just requested)."""
    wait_until(
        browsing,
        "() => { const f = document.getElementById('film'), l = document.getElementById('layer');"
        " return f.complete && f.naturalWidth > 0 && l.complete && l.naturalWidth > 0"
        " && !l.hidden && l.src.includes('/heatmap/'); }",
        "the film and its heatmap",
    )


def set_opacity(browsing: Browsing, value: float) -> None:
    browsing.page.fill("#opacity", str(value))


def show_samples(browsing: Browsing, first: Path, more: Sequence[Path]) -> None:
    """The screenshot's story: one dropped film with its heatmap, then a table of several."""
    drop_files(browsing, [first])
    wait_for_rows(browsing, 1)
    wait_for_heatmap(browsing)
    set_opacity(browsing, 0.6)
    pick_files(browsing, more)
    wait_for_rows(browsing, 1 + len(more))
    browsing.page.click("#results th[data-key='confidence']")
    wait_for_heatmap(browsing)


def screenshot(browsing: Browsing, out: Path) -> Path:
    """A small PNG of the page (256 colours: a few tens of KB for the README)."""
    from PIL import Image

    raw = out.with_suffix(".full.png")
    browsing.page.screenshot(path=str(raw))
    with Image.open(raw) as picture:
        picture.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    raw.unlink()
    return out


def main(out: Path) -> int:
    """Start the server, drive the page through ``show_samples`` and save its screenshot."""
    import tempfile

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from serve_support import sample_images, start_server

    samples = sample_images()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(Path(folder) / "tmp", "--quiet")
        try:
            with open_page(server.url) as browsing:
                show_samples(browsing, samples[4], [samples[0], samples[2], samples[5]])
                screenshot(browsing, out)
                if browsing.outside:
                    print(f"blocked requests elsewhere: {browsing.outside}", file=sys.stderr)
                    return 1
        finally:
            server.stop()
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/serve.png")))
