"""Out-of-distribution image sets that can be built on this machine, with no download: what a
bone-radiograph classifier must refuse. Each builder writes image files (or names bundled
ones) so ``make trust`` reads them through the runtime's own decoder, as ``btxrd-run`` would.

- ``ct_mr``: the real CT and MR slices bundled with pydicom (decoded with the runtime's DICOM
  windowing), one per distinct image (pydicom ships the same MR slice in eight encodings).
- ``photographs``: scikit-image's bundled pictures (``skimage/data``, read as files: the
  functions of ``skimage.data`` would download the ones not bundled).
- ``faces``: the 200 small face photographs of scikit-image's ``lfw_subset``.
- ``documents``: screenshots and documents drawn with Pillow (text pages, forms, UI windows).
- ``noise``: Gaussian, uniform and salt-and-pepper noise, grey and colour.
- ``flat``: nearly flat fields with slight gradients (truly constant images are refused by the
  decoder as blank before any model sees them).
- ``inverted``: fresh synthetic radiographs with their grey levels inverted, as a MONOCHROME1
  image read as MONOCHROME2 would look.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import BtxrdError

_WORDS = [
    "patient",
    "report",
    "radiology",
    "findings",
    "impression",
    "the",
    "of",
    "and",
    "left",
    "right",
    "bone",
    "tumour",
    "normal",
    "benign",
    "malignant",
    "lesion",
    "femur",
    "tibia",
    "humerus",
    "cortex",
    "margin",
    "soft",
    "tissue",
    "follow-up",
    "date",
    "signed",
    "page",
    "total",
    "invoice",
    "settings",
    "file",
    "edit",
    "view",
    "help",
    "cancel",
    "save",
    "open",
    "window",
]
_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
)


def ct_mr_slices() -> list[Path]:
    """pydicom's bundled CT and MR files that the runtime decodes, one per distinct image."""
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    kept: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's test files are odd on purpose
        for path in sorted(folder.glob("*.dcm")):
            try:
                pixels = np.asarray(load_image(path).image)
            except BtxrdError:
                continue  # deliberately broken, or a transfer syntax not decodable here
            if pydicom.dcmread(path, stop_before_pixels=True).get("Modality") in ("CT", "MR"):
                kept.setdefault(hashlib.sha256(pixels.tobytes()).hexdigest(), path)
    return sorted(kept.values())


def photographs() -> list[Path]:
    """scikit-image's bundled picture files (PNG and JPEG), as files."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def faces(out: Path) -> list[Path]:
    import skimage

    stack = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    return _write(out, [Image.fromarray(_u8(face * 255)) for face in stack], "face")


def documents(out: Path, n: int = 60, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    return _write(out, [_document(rng, i) for i in range(n)], "document")


def noise(out: Path, n: int = 60, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        height, width = (int(v) for v in rng.integers(200, 900, 2))
        shape = (height, width, 3) if i % 2 else (height, width)
        kind = i % 3
        if kind == 0:
            values = rng.normal(rng.uniform(60, 190), rng.uniform(10, 70), shape)
        elif kind == 1:
            values = rng.uniform(0, 255, shape)
        else:
            values = np.where(rng.random(shape) < rng.uniform(0.02, 0.3), 255.0, 0.0)
            values = np.where(rng.random(shape) < 0.5, values, 255 - values)
        images.append(Image.fromarray(_u8(values)))
    return _write(out, images, "noise")


def flat(out: Path, n: int = 60, seed: int = 0) -> list[Path]:
    """Fields that vary by a few grey levels (a gradient and faint noise) around one level."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        height, width = (int(v) for v in rng.integers(200, 900, 2))
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * x + np.sin(angle) * y
        values = rng.uniform(10, 245) + rng.uniform(4, 12) * ramp + rng.normal(0, 0.8, y.shape)
        images.append(Image.fromarray(_u8(values)))
    return _write(out, images, "flat")


def inverted(out: Path, radiographs: Sequence[Path]) -> list[Path]:
    """Each radiograph with its grey levels inverted (MONOCHROME1 shown as MONOCHROME2)."""
    images = [ImageOps.invert(load_image(p).image.convert("L")) for p in radiographs]
    return _write(out, images, "inverted", suffix=".jpeg")


OOD_SETS: dict[str, str] = {
    "ct_mr": "real CT and MR slices bundled with pydicom (DICOM, the runtime's windowing)",
    "photographs": "scikit-image's bundled photographs and pictures",
    "faces": "scikit-image's lfw_subset faces (25 x 25 photographs)",
    "documents": "documents and screenshots drawn with Pillow",
    "noise": "Gaussian, uniform and salt-and-pepper noise, grey and colour",
    "flat": "nearly flat fields with slight gradients",
    "inverted": "fresh synthetic radiographs inverted (a MONOCHROME1 mistake)",
}


def build_ood_sets(out: Path, fresh: Sequence[Path]) -> dict[str, list[Path]]:
    """Every set of ``OOD_SETS``; generated ones are written under ``out/<name>/``."""
    builders: dict[str, Callable[[], list[Path]]] = {
        "ct_mr": ct_mr_slices,
        "photographs": photographs,
        "faces": lambda: faces(out / "faces"),
        "documents": lambda: documents(out / "documents"),
        "noise": lambda: noise(out / "noise"),
        "flat": lambda: flat(out / "flat"),
        "inverted": lambda: inverted(out / "inverted", fresh),
    }
    return {name: builders[name]() for name in OOD_SETS}


def _document(rng: np.random.Generator, index: int) -> Image.Image:
    width, height = int(rng.integers(500, 1400)), int(rng.integers(400, 1400))
    dark = index % 4 == 3
    paper = (30, 30, 34) if dark else (255, 255, 255)
    ink = (220, 220, 220) if dark else (20, 20, 20)
    image = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(image)
    font = _font(int(rng.integers(12, 28)), index)
    kind = index % 3
    if kind == 1:  # a window: title bar, buttons, a sidebar
        draw.rectangle([0, 0, width, 36], fill=tuple(int(v) for v in rng.integers(40, 200, 3)))
        draw.text((12, 8), " ".join(rng.choice(_WORDS, 3)), fill=(255, 255, 255), font=font)
        draw.rectangle([0, 36, width // 4, height], fill=(200, 200, 205) if not dark else (50,) * 3)
        for b in range(int(rng.integers(2, 6))):
            x0, y0 = width // 4 + 30 + b * 130, height - 70
            draw.rounded_rectangle([x0, y0, x0 + 110, y0 + 40], 8, outline=ink, width=2)
            draw.text((x0 + 14, y0 + 10), str(rng.choice(_WORDS)), fill=ink, font=font)
    if kind == 2:  # a table or form
        rows, cols = int(rng.integers(5, 15)), int(rng.integers(2, 6))
        for r in range(rows + 1):
            y = 60 + r * (height - 120) // rows
            draw.line([40, y, width - 40, y], fill=ink, width=1)
        for c in range(cols + 1):
            x = 40 + c * (width - 80) // cols
            draw.line([x, 60, x, height - 60], fill=ink, width=1)
    y = 50 if kind != 1 else 60
    left = 40 if kind != 1 else width // 4 + 30
    while y < height - 110:
        words = " ".join(rng.choice(_WORDS, int(rng.integers(3, 12))))
        draw.text((left, y), words, fill=ink, font=font)
        y += int(font.size * 1.6) if hasattr(font, "size") else 20
    return image


def _font(size: int, index: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    path = _FONTS[index % len(_FONTS)]
    if Path(path).exists():
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _write(out: Path, images: Sequence[Image.Image], stem: str, suffix: str = ".png") -> list:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = out / f"{stem}_{i:03d}{suffix}"
        image.save(path, **({"quality": 92} if suffix == ".jpeg" else {}))
        paths.append(path)
    return paths
