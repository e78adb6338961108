"""Inputs and checks for the sharded engines' tests: many small, distinct radiographs, and a
row-by-row comparison of two Parquet datasets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "models" / "samples"
SIDE = 128  # small: decoding is cheap, the model still sees an upscaled radiograph


def make_radiographs(folder: Path, count: int) -> list[Path]:
    """``count`` distinct JPEGs: the shipped samples at 128 px, each copy a little brighter,
    darker or shifted than the last (distinct bytes, so distinct sha256)."""
    sources = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    bases = []
    for path in sources:
        with Image.open(path) as image:
            bases.append(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        base = bases[i % len(bases)]
        variant = ImageEnhance.Brightness(base).enhance(0.9 + 0.2 * ((i // len(bases)) % 11) / 10)
        shift = (i // len(bases)) % 7 - 3
        pixels = np.roll(np.asarray(variant), shift, axis=1)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def write_config(path: Path, shard_size: int, max_pixels: int | None = None) -> Path:
    text = f"scale:\n  shard_size: {shard_size}\n"
    if max_pixels is not None:
        text += f"inference:\n  max_pixels: {max_pixels}\n"
    path.write_text(text, encoding="utf-8")
    return path


def enlarge(folder: Path, names: list[str], side: int = 300) -> None:
    """Make some inputs larger than the rest (a pixel limit between them refuses just those)."""
    for name in names:
        with Image.open(folder / name) as image:
            image.resize((side, side)).save(folder / name, quality=90)


def read_rows(folder: Path):
    """Every row of a dataset folder (pyarrow), in input order."""
    import pyarrow.parquet as pq

    return pq.read_table(folder).sort_by("input_index").to_pylist()


def assert_same_rows(ours: list[dict], reference: list[dict], tolerance: float = 1e-6) -> None:
    """Equal row for row: every column but the timings exactly, probabilities and confidence
    to ``tolerance``, the out-of-distribution score to a relative 1e-5 (float32 sums whose
    order follows the thread count)."""
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            a, b = mine[key], theirs[key]
            if key.endswith("_ms"):
                continue
            if key.startswith("prob_") or key == "confidence":
                assert (a is None) == (b is None), (key, mine["path"])
                if a is not None:
                    assert abs(a - b) <= tolerance, (key, mine["path"], a, b)
            elif key == "ood_score" and a is not None and b is not None:
                assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (key, mine["path"], a, b)
            else:
                assert a == b, (key, mine["path"], a, b)


def btxrd_run(*args: object) -> list[str]:
    return [str(Path(sys.executable).parent / "btxrd-run"), *map(str, args)]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}


def kill_when_parts(process: subprocess.Popen, folder: Path, parts: int, timeout: float = 120):
    """SIGKILL ``process`` as soon as ``folder`` holds ``parts`` finished part files."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("part-*.parquet"))) >= parts:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {parts} parts: {process.returncode}")
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no {parts} part files in {folder} after {timeout} s")


def readme_scale_commands() -> list[list[str]]:
    """The first command block of the README's "Many images" section, one argument list per
    ``btxrd-run`` line (comments dropped)."""
    import re
    import shlex

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Many images", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the Many images section opens with a sh block"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("btxrd-run")]
