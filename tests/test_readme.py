"""The README's two commands are the product's front door: they must stay true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def _entry_point(name: str) -> str:
    """The console script of this environment (the one the tests run in)."""
    return str(Path(sys.executable).parent / name)


def _readme_examples(sample: Path, samples: Path) -> dict[str, list[str]]:
    """The README's command table, one concrete command per row (IMAGE = a shipped sample)."""
    return {
        "btxrd-run IMAGE": ["btxrd-run", str(sample)],
        "btxrd-run --dir FOLDER --recursive": ["btxrd-run", "--dir", str(samples), "--recursive"],
        "btxrd-run --json --output FILE": ["btxrd-run", str(sample), "--json", "-o", "out.json"],
        "btxrd-run --cam --cam-dir DIR": ["btxrd-run", str(sample), "--cam", "--cam-dir", "cams"],
        "btxrd-run --info": ["btxrd-run", "--info"],
        "btxrd-run --selftest": ["btxrd-run", "--selftest"],
        "btxrd-run --labels FILE": [
            "btxrd-run",
            "--dir",
            str(samples),
            "--labels",
            str(samples / "labels.csv"),
        ],
        "btxrd-run --version": ["btxrd-run", "--version"],
    }


def _run_installed(
    command: list[str], folder: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """An installed btxrd command run in ``folder``, with no model or config from the caller's
    environment."""
    return subprocess.run(
        [_entry_point(command[0]), *command[1:]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [
        "btxrd-run IMAGE",
        "btxrd-run --dir FOLDER --recursive",
        "btxrd-run --json --output FILE",
        "btxrd-run --cam --cam-dir DIR",
        "btxrd-run --info",
        "btxrd-run --selftest",
        "btxrd-run --labels FILE",
        "btxrd-run --version",
    ],
)
def test_readme_commands_work_from_another_folder(row, sample_images, tmp_path) -> None:
    """Run from a folder that is not the checkout: the demo model comes from the package."""
    if not sample_images:
        pytest.skip("the samples are not in this checkout")
    command = _readme_examples(sample_images[0], sample_images[0].parent)[row]
    assert row.split()[0] in (ROOT / "README.md").read_text(encoding="utf-8")
    done = _run_installed(command, tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if "--output" in row:
        assert (tmp_path / "out.json").exists() and "wrote 1 record to out.json" in done.stderr
    if "--cam" in row:
        assert len(list((tmp_path / "cams").iterdir())) == 1 and "overlay" in done.stderr


@pytest.mark.slow
@pytest.mark.torch
def test_readme_torch_commands_work_from_another_folder(sample_images, tmp_path) -> None:
    """btxrd-synth, btxrd-explain (an image, then a report on what synth wrote) and btxrd-export
    (the checkpoint as an argument), each run from a folder that is not the checkout."""
    pytest.importorskip("torch")
    if not sample_images or not (ROOT / "models" / "btxrd-demo.pt").exists():
        pytest.skip("the demo checkpoint and samples are not in this checkout")
    checkpoint = ROOT / "models" / "btxrd-demo.pt"
    commands = [
        ["btxrd-synth", "--out", "synthetic", "--n", "12", "--max-size", "300", "--quiet"],
        ["btxrd-explain", str(sample_images[0]), "--out", "overlays", "--quiet"],
        ["btxrd-explain", "report", "--data", "synthetic", "--out", "report", "--quiet"],
        ["btxrd-export", str(checkpoint), "-o", "mine.onnx", "--parity-images",
         str(sample_images[0].parent)],
    ]  # fmt: skip
    for command in commands:
        done = _run_installed(command, tmp_path, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    assert len(list((tmp_path / "overlays").glob("*_gradcam.png"))) == 1
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "mine.onnx").exists() and (tmp_path / "mine.parity.json").exists()
