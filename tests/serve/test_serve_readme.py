"""The README's web-page commands are real: ``btxrd-serve`` (the installed command, run from a
folder that is not the checkout, so the demo model comes from the package) answers its
``curl`` example with a classified record."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serve_support import REPO_ROOT, start_server

pytest.importorskip("starlette")


def _section() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Web page: btxrd-serve")
    return text[start : text.index("\n## ", start + 1)]


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", _section(), re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def test_the_section_starts_with_the_one_command_and_shows_the_screenshot():
    assert _commands()[0] == "pip install '.[serve]' && btxrd-serve"
    picture = re.search(r"!\[[^]]+\]\(([^)]+)\)", _section())
    assert picture and (REPO_ROOT / picture.group(1)).is_file()
    assert (REPO_ROOT / picture.group(1)).stat().st_size < 200_000  # small enough to commit


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_btxrd_serve_answers_the_readme_curl_example(tmp_path):
    command = Path(sys.executable).parent / "btxrd-serve"
    if not command.exists():
        pytest.skip("btxrd-serve is not installed in this environment (pip install -e '.[serve]')")
    server = start_server(tmp_path / "tmp", program=[str(command)], cwd=tmp_path)
    try:
        (curl,) = [c for c in _commands() if c.startswith("curl ")]
        argv = shlex.split(curl.replace("http://127.0.0.1:8000/", server.url))
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["results"][0]["prediction"] == "Normal"
        assert document["model"]["file"] == "btxrd-demo.onnx"
    finally:
        assert server.stop() == 130
