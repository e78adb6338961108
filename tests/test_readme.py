"""The README's two commands are the product's front door: they must stay true."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README must open with a sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_the_two_commands() -> None:
    assert readme_commands() == ["make run", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]
    assert readme_commands()[1] in commands


@pytest.mark.slow
def test_make_run_classifies_the_shipped_samples(sample_images: list[Path]) -> None:
    samples = sample_images
    if not (ROOT / "models" / "btxrd-demo.onnx").exists() or not samples:
        pytest.skip("the demo model and samples are not in this checkout")
    result = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for sample in samples:
        assert sample.name in result.stdout
    assert "not for clinical use" in result.stderr
    # The environment `make run` built holds the runtime only.
    listing = subprocess.run(
        [str(ROOT / ".venv-run" / "bin" / "python"), "-m", "pip", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for heavy in ("torch", "onnx ", "opencv", "grad-cam"):
        assert heavy not in listing
