"""Reliability diagrams drawn with Pillow (no plotting library in the export extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from btxrd.runtime.output.atomic import atomic_open

_PANEL = 360
_MARGIN = 48


def draw_reliability(
    path: Path,
    before: Sequence[dict[str, float]],
    after: Sequence[dict[str, float]],
    title: str,
    ece: tuple[float, float],
) -> None:
    """Two panels (before and after calibration): per confidence bin a bar at the bin's
    accuracy, a dot at its mean confidence, the diagonal of perfect calibration, and the
    number of images per bin."""
    width = 2 * (_PANEL + 2 * _MARGIN)
    height = _PANEL + 2 * _MARGIN + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(13)
    draw.text((_MARGIN, 6), title, fill="black", font=font)
    for i, (name, table, value) in enumerate(
        (("before", before, ece[0]), ("after", after, ece[1]))
    ):
        left = i * (_PANEL + 2 * _MARGIN) + _MARGIN
        top = _MARGIN + 12

        def xy(conf: float, acc: float, left: int = left, top: int = top) -> tuple[float, float]:
            return left + conf * _PANEL, top + (1 - acc) * _PANEL

        draw.rectangle([left, top, left + _PANEL, top + _PANEL], outline="black")
        for row in table:
            x0, _ = xy(row["lower"], 0)
            x1, y = xy(row["upper"], row["accuracy"])
            draw.rectangle([x0 + 1, y, x1 - 1, top + _PANEL], fill=(110, 150, 210))
            cx, cy = xy(row["confidence"], row["confidence"])
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(200, 60, 40))
            draw.text((x0 + 2, top + _PANEL + 4), str(row["count"]), fill="gray", font=font)
        draw.line([xy(0, 0), xy(1, 1)], fill=(60, 60, 60), width=1)
        draw.text((left, top - 16), f"{name} calibration: ECE {value:.4f}", fill="black", font=font)
        draw.text(
            (left, top + _PANEL + 20), "confidence (max probability)", fill="black", font=font
        )
        draw.text((left - 40, top - 2), "acc.", fill="black", font=font)
    with atomic_open(path, "wb", encoding=None) as handle:
        image.save(handle, format="PNG")
