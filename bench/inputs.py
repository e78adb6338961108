"""Benchmark inputs, drawn by the project's own generator (``btxrd-synth``) at a fixed seed.

Kinds (all cached under ``bench/.cache/inputs``, rebuilt only when their recipe changes):

- ``large``: 2000 x 2500 JPEGs, the size of a real radiograph. The generator draws each image
  with a long side of 2500 px and the body part's own aspect ratio; it is turned upright and
  centred on a 2000 x 2500 detector whose empty part is the image's border level plus faint
  noise (as an unexposed plate looks), then saved at quality 92 in the generator's mode (L or RGB).
- ``png16``: the large images as 16-bit grayscale PNGs (12 significant bits, like CR/DR exports).
- ``small``: the large images resized to 224 x 224 PNGs (the network's input size).
- ``memory``: 600 px JPEGs for the long memory run; a few hundred distinct images, the rest of
  the folder hard links to them (peak memory does not depend on what the pixels show).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from btxrd.export.synthetic import GENERATOR_VERSION
from btxrd.runtime.output.atomic import write_text

SEED = 6  # the performance issue's number; any fixed value would do
LARGE_SIZE = (2000, 2500)  # width, height
SMALL_SIDE = 224
MEMORY_SIDE = 600
JPEG_QUALITY = 92
_RECIPE_VERSION = 1  # bump when the post-processing below changes


@dataclass(frozen=True)
class Split:
    """Images to calibrate int8 on and held-out images to judge it on, and where they came from."""

    calibration: list[Path]
    held_out: list[Path]
    source: str


class Inputs:
    """Make (once) and return benchmark inputs of each kind."""

    def __init__(self, cache: Path, synth: Path) -> None:
        self.cache = cache / "inputs"
        self.synth = synth
        self.cache.mkdir(parents=True, exist_ok=True)

    def large_jpegs(self, n: int) -> list[Path]:
        spec = {"kind": "large", "size": LARGE_SIZE, "quality": JPEG_QUALITY}
        return self._cached("large", spec, n, self._make_large)

    def png16(self, n: int) -> list[Path]:
        sources = self.large_jpegs(n)
        spec = {"kind": "png16", "size": LARGE_SIZE}
        return self._cached("png16", spec, n, lambda d, k: _derive(sources[:k], d, _to_png16))

    def small_pngs(self, n: int) -> list[Path]:
        sources = self.large_jpegs(n)
        spec = {"kind": "small", "side": SMALL_SIDE}
        return self._cached("small", spec, n, lambda d, k: _derive(sources[:k], d, _to_small))

    def memory_folder(self, count: int, distinct: int) -> Path:
        """A folder of ``count`` 600 px JPEGs (``distinct`` different ones, then hard links)."""
        spec = {"kind": "memory", "side": MEMORY_SIDE}
        unique = self._cached("memory", spec, distinct, self._make_memory)
        return self.folder(f"memory-{count}", [unique[i % len(unique)] for i in range(count)])

    def folder(self, name: str, paths: list[Path]) -> Path:
        """A folder holding exactly ``paths`` (hard links, or copies across file systems)."""
        folder = self.cache / "folders" / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for i, path in enumerate(paths):
            target = folder / f"{i:05d}_{path.name}"
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        return folder

    def labelled_split(self, repo: Path, n_calibration: int, n_held_out: int) -> Split:
        """The demo model's split of ``data/synthetic`` when both exist, else a generated set."""
        split_file = repo / "models" / "btxrd-demo.split.json"
        images = repo / "data" / "synthetic" / "images"
        if split_file.is_file() and images.is_dir():
            split = json.loads(split_file.read_text())
            train = [images / n for n in split.get("train", []) if (images / n).is_file()]
            test = [images / n for n in split.get("test", []) if (images / n).is_file()]
            if len(train) >= n_calibration and test:
                return Split(
                    train[:n_calibration],
                    test[:n_held_out],
                    f"{split_file.relative_to(repo)}: first {n_calibration} of 'train' for "
                    f"calibration, {min(n_held_out, len(test))} of 'test' held out "
                    f"(images in {images.relative_to(repo)})",
                )
        total = n_calibration + n_held_out
        spec = {"kind": "split", "max_size": 1200}
        paths = self._cached("split", spec, total, self._make_split)
        return Split(
            paths[:n_calibration],
            paths[n_calibration:total],
            f"generated: btxrd-synth seed {SEED + 1}, long side 300..1200 px; first "
            f"{n_calibration} calibrate, next {n_held_out} held out",
        )

    # Makers: each writes ``k`` files into ``folder`` and returns them in order.

    def _make_large(self, folder: Path, k: int) -> list[Path]:
        raw = self._synthesise(k, SEED, LARGE_SIZE[1], LARGE_SIZE[1])
        out = []
        for i, path in enumerate(raw):
            with Image.open(path) as opened:
                image = _on_detector(opened, LARGE_SIZE, np.random.default_rng([SEED, i]))
            target = folder / f"large_{i:04d}.jpeg"
            image.save(target, quality=JPEG_QUALITY)
            out.append(target)
        return out

    def _make_memory(self, folder: Path, k: int) -> list[Path]:
        raw = self._synthesise(k, SEED + 2, MEMORY_SIDE, MEMORY_SIDE)
        return _move(raw, folder)

    def _make_split(self, folder: Path, k: int) -> list[Path]:
        raw = self._synthesise(k, SEED + 1, 300, 1200)
        return _move(raw, folder)

    def _synthesise(self, n: int, seed: int, min_size: int, max_size: int) -> list[Path]:
        out = Path(tempfile.mkdtemp(prefix="synth-", dir=self.cache))
        command = [str(self.synth), "--out", str(out), "--n", str(n), "--seed", str(seed)]
        command += ["--min-size", str(min_size), "--max-size", str(max_size), "--overwrite"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"btxrd-synth failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return sorted((out / "images").iterdir())

    def _cached(self, kind: str, spec: dict[str, Any], n: int, make) -> list[Path]:
        spec = {**spec, "seed": SEED, "generator": GENERATOR_VERSION, "recipe": _RECIPE_VERSION}
        spec = json.loads(json.dumps(spec))  # as the manifest will hold it (tuples as lists)
        folder = self.cache / kind
        manifest = folder / "manifest.json"
        if manifest.is_file():
            saved = json.loads(manifest.read_text())
            files = [folder / name for name in saved.get("files", [])]
            if saved.get("spec") == spec and len(files) >= n and all(f.is_file() for f in files):
                return files[:n]
        _log(f"making {n} '{kind}' input images in {folder} (once; cached afterwards)")
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        files = make(folder, n)
        for stray in self.cache.glob("synth-*"):
            shutil.rmtree(stray, ignore_errors=True)
        write_text(manifest, json.dumps({"spec": spec, "files": [f.name for f in files]}) + "\n")
        return files


def _on_detector(
    image: Image.Image, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """Upright, scaled to fit, centred on a plate of the border's level with faint noise."""
    image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    if image.width > image.height:
        image = image.transpose(Image.Transpose.ROTATE_90)
    scale = min(size[0] / image.width, size[1] / image.height, 1.0)
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    level = np.median(border, axis=0)
    shape = (size[1], size[0], *pixels.shape[2:])
    plate = np.clip(level + rng.normal(0.0, 2.0, shape), 0, 255).astype(np.uint8)
    top, left = (size[1] - image.height) // 2, (size[0] - image.width) // 2
    plate[top : top + image.height, left : left + image.width] = pixels
    return Image.fromarray(plate, image.mode)


def _to_png16(source: Path, folder: Path, i: int) -> Path:
    with Image.open(source) as opened:
        gray = np.asarray(opened.convert("L"), dtype=np.uint16)
    low_bits = np.random.default_rng([SEED, i, 16]).integers(0, 16, gray.shape, dtype=np.uint16)
    target = folder / f"{source.stem}_16bit.png"
    Image.fromarray(gray * 16 + low_bits).save(target)
    return target


def _to_small(source: Path, folder: Path, i: int) -> Path:
    with Image.open(source) as opened:
        small = opened.resize((SMALL_SIDE, SMALL_SIDE), Image.Resampling.BILINEAR)
    target = folder / f"{source.stem}_{SMALL_SIDE}.png"
    small.save(target)
    return target


def _derive(sources: list[Path], folder: Path, convert) -> list[Path]:
    return [convert(source, folder, i) for i, source in enumerate(sources)]


def _move(paths: list[Path], folder: Path) -> list[Path]:
    out = []
    for path in paths:
        target = folder / path.name
        shutil.move(path, target)
        out.append(target)
    return out


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)
