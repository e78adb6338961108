"""From projected density to a JPEG as a given hospital's equipment would have stored it.

Each of BTXRD's three centres gets its own exposure window, gamma, noise, sharpness, colour
storage and JPEG quality, so "which centre" is visible in the pixels, as in the real data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from btxrd.export.synthetic.anatomy import Canvas


@dataclass(frozen=True)
class Centre:
    """Acquisition and storage habits of one centre; ranges are sampled per image."""

    number: int
    weight: int  # images in real BTXRD
    low: tuple[float, float]  # window, in units of 1 - exp(-density)
    high: tuple[float, float]
    gamma: tuple[float, float]
    noise: tuple[float, float]
    blur: tuple[float, float]  # px at a 1000 px long side
    sharpen: float  # probability of unsharp masking (CR/DR post-processing)
    rgb: float  # probability the JPEG is stored as three identical channels
    tint: tuple[float, float, float]
    quality: tuple[int, int]


CENTRES = (
    Centre(1, 2938, (0.08, 0.18), (0.80, 0.92), (0.85, 1.15), (0.012, 0.025), (0.4, 0.9), 0.6,
           0.35, (1.0, 1.0, 1.0), (88, 95)),
    Centre(2, 549, (0.14, 0.24), (0.76, 0.86), (1.15, 1.45), (0.02, 0.035), (0.5, 1.0), 0.3,
           0.85, (1.0, 0.97, 0.92), (85, 92)),
    Centre(3, 259, (0.0, 0.1), (0.86, 0.98), (0.75, 0.95), (0.008, 0.018), (0.8, 1.4), 0.1,
           0.2, (1.0, 1.0, 1.0), (86, 94)),
)  # fmt: skip


def develop(canvas: Canvas, centre: Centre, rng: np.random.Generator, rgb: bool) -> Image.Image:
    """Turn density into a radiograph: exposure, window, gamma, quantum noise, blur, storage."""
    h, w = canvas.height, canvas.width
    value = 1.0 - np.exp(-(canvas.tissue + canvas.bone))
    value *= _heel_effect(w, h, rng)
    lo, hi = rng.uniform(*centre.low), rng.uniform(*centre.high)
    value = np.clip((value - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(*centre.gamma)
    fog = rng.uniform(0.0, 0.06)
    value = fog + (1.0 - fog) * value
    if rng.random() < 0.25:
        _collimate(value, rng)
    sigma = rng.uniform(*centre.noise)
    noise = rng.standard_normal((h, w), dtype=np.float32)
    value += sigma * np.sqrt(value + 0.05) * noise
    gray = Image.fromarray(np.clip(value * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if rng.random() < 0.5:
        _stamp_marker(gray, rng)
    scale = max(w, h) / 1000.0
    gray = gray.filter(ImageFilter.GaussianBlur(rng.uniform(*centre.blur) * max(scale, 0.35)))
    if rng.random() < centre.sharpen:
        gray = gray.filter(
            ImageFilter.UnsharpMask(radius=max(1.0, 6 * scale), percent=60, threshold=2)
        )
    if not rgb:
        return gray
    channels = [gray.point(lambda v, k=k: round(v * k)) for k in centre.tint]
    return Image.merge("RGB", channels)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def _heel_effect(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """The anode heel: exposure falls off gently along one direction of the film."""
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    return 1.0 + rng.uniform(0.0, 0.08) * (np.cos(angle) * xs + np.sin(angle) * ys)


def _collimate(value: np.ndarray, rng: np.random.Generator) -> None:
    """Shutter edges: a band along one or two sides that the beam never reached."""
    h, w = value.shape
    level = rng.uniform(0.75, 0.95) if rng.random() < 0.6 else rng.uniform(0.0, 0.04)
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        depth = rng.uniform(0.02, 0.07)
        if side == 0:
            value[:, : max(1, int(w * depth))] = level
        elif side == 1:
            value[:, w - max(1, int(w * depth)) :] = level
        elif side == 2:
            value[: max(1, int(h * depth)), :] = level
        else:
            value[h - max(1, int(h * depth)) :, :] = level


def _stamp_marker(gray: Image.Image, rng: np.random.Generator) -> None:
    """A side marker ("L" or "R") burned in near a corner, as radiographers do."""
    w, h = gray.size
    size = max(8, int(min(w, h) * rng.uniform(0.04, 0.07)))
    font = ImageFont.load_default(size=size)
    x = int(rng.uniform(0.03, 0.12) * w) if rng.random() < 0.5 else int(w * rng.uniform(0.82, 0.9))
    y = int(rng.uniform(0.03, 0.12) * h) if rng.random() < 0.5 else int(h * rng.uniform(0.82, 0.9))
    ImageDraw.Draw(gray).text((x, y), "L" if rng.random() < 0.5 else "R", fill=245, font=font)
