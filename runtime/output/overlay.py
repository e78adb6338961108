"""Heatmap overlays that explain themselves, with Pillow and numpy only (no cv2 in the runtime).

The JET colours (as OpenCV's, so maps look like pytorch-grad-cam's) are blended with a weight
that grows with the attention: where the map is near zero the radiograph shows untinted, so the
film stays readable instead of turning blue. ``explained_overlay`` adds what a reader needs to read
it: the class explained and its probability, a colour scale, and what a map of a class without a
lesion means; ``png_info`` carries the same facts as PNG text metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from btxrd.runtime.labels.sheet import NORMAL
from btxrd.runtime.settings import OVERLAY_ALPHA

_SCALE_HEIGHT = 12
_PAD = 6
_BACKGROUND = (24, 24, 26)
_TEXT = (236, 236, 236)


def normalise_cam(cam: np.ndarray) -> np.ndarray | None:
    """Min-max to [0, 1], as pytorch-grad-cam does; ``None`` for a flat (degenerate) map."""
    cam = np.asarray(cam, dtype=np.float32)
    if not np.isfinite(cam).all():
        return None
    low, high = float(cam.min()), float(cam.max())
    if high - low <= 1e-12:
        return None
    return (cam - low) / (high - low)


def resize_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to (width, height)."""
    return np.asarray(
        Image.fromarray(cam.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    )


def jet(values: np.ndarray) -> np.ndarray:
    """The JET colormap (as OpenCV's COLORMAP_JET) for values in [0, 1] -> uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.rint(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, cam01: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """Blend a [0, 1] map (any size) over ``image`` at the image's own size, RGB. The opacity
    is ``alpha`` where attention is highest and falls to zero with it."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    attention = np.clip(resize_cam(cam01, image.size), 0.0, 1.0)[..., None]
    heat = jet(attention[..., 0]).astype(np.float32)
    weight = alpha * attention
    blended = (1.0 - weight) * base + weight * heat
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8))


def caption_for(class_name: str, probability: float | None, method: str = "Grad-CAM") -> list[str]:
    """What an overlay of ``class_name`` shows, in words."""
    score = "" if probability is None else f" (probability {probability:.3f})"
    lines = [f"{method} of {class_name}{score}: where the evidence for {class_name} is"]
    if class_name == NORMAL:
        lines.append(
            f"A {NORMAL} map marks the film the model read as healthy; it does not "
            "point at a lesion."
        )
    return lines


def explained_overlay(
    image: Image.Image,
    cam01: np.ndarray,
    caption: list[str],
    *,
    alpha: float = OVERLAY_ALPHA,
    with_original: bool = False,
) -> Image.Image:
    """The overlay (beside the original when asked), the caption and a colour scale below."""
    view = overlay(image, cam01, alpha)
    if with_original:
        pair = Image.new("RGB", (view.width * 2 + _PAD, view.height), _BACKGROUND)
        pair.paste(image.convert("RGB"), (0, 0))
        pair.paste(view, (view.width + _PAD, 0))
        view = pair
    text_size = max(12, min(24, view.width // 60))
    font = _font(text_size)
    lines = [
        wrapped
        for line in [*caption, "Attention scale (opacity grows with it):"]
        for wrapped in wrap_text(line, font, view.width - 2 * _PAD)
    ]
    band = _PAD + len(lines) * (text_size + 4) + _SCALE_HEIGHT + text_size + 2 * _PAD
    page = Image.new("RGB", (view.width, view.height + band), _BACKGROUND)
    page.paste(view, (0, 0))
    draw = ImageDraw.Draw(page)
    y = view.height + _PAD
    for line in lines:
        draw.text((_PAD, y), line, fill=_TEXT, font=font)
        y += text_size + 4
    scale_width = max(60, min(view.width - 2 * _PAD, 480))
    ramp = np.linspace(0.0, 1.0, scale_width)
    strip = jet(np.tile(ramp, (_SCALE_HEIGHT, 1)))
    page.paste(Image.fromarray(strip), (_PAD, y))
    y += _SCALE_HEIGHT + 2
    draw.text((_PAD, y), "low", fill=_TEXT, font=font)
    high = "high"
    draw.text(
        (_PAD + scale_width - draw.textlength(high, font=font), y), high, fill=_TEXT, font=font
    )
    return page


def cam_overlay(
    image: Image.Image,
    cam01: np.ndarray,
    *,
    name: str,
    source: str,
    class_name: str,
    probability: float,
    prediction: str | None,
    model_sha256: str,
    intended_use: str,
    alpha: float = OVERLAY_ALPHA,
    with_original: bool = False,
) -> tuple[Image.Image, PngImagePlugin.PngInfo]:
    """The overlay ``btxrd-run --cam`` writes and ``btxrd-serve`` shows: the image's ``name`` in
    the caption, the class explained with its probability, the colour scale, and the same facts
    (``source``: the path as given) as PNG text metadata."""
    caption = caption_for(class_name, probability)
    picture = explained_overlay(
        image,
        cam01,
        [f"{name}: {caption[0]}", *caption[1:]],
        alpha=alpha,
        with_original=with_original,
    )
    metadata = png_info(
        {
            "image": source,
            "class": class_name,
            "probability": f"{probability:.6f}",
            "prediction": prediction,
            "model_sha256": model_sha256,
            "intended_use": intended_use,
        }
    )
    return picture, metadata


def png_info(fields: Mapping[str, object]) -> PngImagePlugin.PngInfo:
    """PNG text chunks (``btxrd.<key>``) that travel with an overlay file."""
    info = PngImagePlugin.PngInfo()
    for key, value in fields.items():
        info.add_itxt(f"btxrd.{key}", str(value))
    return info


def wrap_text(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a word longer than
    the line stays whole)."""
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if current and measure.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)
