"""Fuzz btxrd's decode path with atheris: mutated image files go through ``load_image`` and
``preprocess`` exactly as ``btxrd-run`` reads a file. Every input must either give a finite
float32 tensor of the contract's shape or raise one of btxrd's own errors (``BtxrdError``);
anything else (a Pillow exception leaking, a crash, a NaN tensor) stops the run as a failure.

Run with ``make fuzz`` (100,000 executions; not part of CI). Seeds are generated on first use in
``results/fuzz/corpus``; the tally is printed and written to ``results/fuzz/summary.json``.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import atheris
import numpy as np
from PIL import Image

with atheris.instrument_imports():
    from btxrd.runtime.contract import Preprocessing
    from btxrd.runtime.errors import BtxrdError
    from btxrd.runtime.imageio import load_image, quiet_decoder_warnings
    from btxrd.runtime.preprocess import preprocess

OUT = Path("results/fuzz")
PREP = Preprocessing(image_size=(64, 64))
tally: Counter[str] = Counter()
started = time.monotonic()
target_runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-atheris_runs=")), 0)
scratch = OUT / "input"


def write_seeds(corpus: Path) -> None:
    """Small files of every kind the decoder meets; the fuzzer mutates them."""
    corpus.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    seeds: dict[str, tuple[Image.Image, dict]] = {
        "gray.png": (Image.fromarray(gray), {}),
        "gray16.png": (Image.fromarray(gray.astype(np.uint16) * 16), {}),
        "gray.jpg": (Image.fromarray(gray), {"quality": 80}),
        "rgb.jpg": (Image.fromarray(np.dstack([gray, gray, gray])), {"quality": 80}),
        "palette.png": (Image.fromarray(gray).convert("P"), {"transparency": 0}),
        "rgba.png": (Image.fromarray(np.dstack([gray] * 4)), {}),
        "float.tif": (Image.fromarray(gray.astype(np.float32)), {}),
        "gray.bmp": (Image.fromarray(gray), {}),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds["exif.jpg"] = (Image.fromarray(gray), {"exif": exif})
    for name, (image, options) in seeds.items():
        buffer = io.BytesIO()
        image.save(buffer, format=_format(name), **options)
        (corpus / name).write_bytes(buffer.getvalue())


def _format(name: str) -> str:
    return {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP"}[name.rsplit(".", 1)[1]]


def test_one_input(data: bytes) -> None:
    scratch.write_bytes(data)
    try:
        tensor = preprocess(load_image(scratch), PREP)
    except BtxrdError as exc:
        tally[f"refused: {type(exc).__name__}"] += 1
    else:
        if tensor.shape != (3, 64, 64) or tensor.dtype != np.float32:
            raise AssertionError(f"tensor of shape {tensor.shape} and type {tensor.dtype}")
        if not np.isfinite(tensor).all():
            raise AssertionError("tensor with NaN or infinity")
        tally["decoded"] += 1
    runs = sum(tally.values())
    if runs % 5000 == 0 or runs == target_runs:
        report(runs)


def report(runs: int) -> None:
    summary = {
        "executions": runs,
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": dict(tally),
        "failures": 0,  # any other outcome stops the run before a report is written
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fuzz: {json.dumps(summary)}", file=sys.stderr, flush=True)


def main() -> None:
    corpus = OUT / "corpus"
    if not corpus.is_dir() or not any(corpus.iterdir()):
        write_seeds(corpus)
    quiet_decoder_warnings()
    atheris.Setup([*sys.argv, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
