"""LabelMe 5.x JSON for a synthetic image, shaped like the real BTXRD annotator output.

Each lesion becomes a ``rectangle`` (two corners, dragged from a random corner as people do,
with a little slack) and a ``polygon`` tracing its outline. Points are clipped to the image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from btxrd.export.synthetic.anatomy import Point

LABELME_VERSION = "5.4.1"


def make_annotation(
    image_name: str,
    width: int,
    height: int,
    lesions: Sequence[tuple[str, Sequence[Point]]],
    rng: np.random.Generator,
) -> dict[str, object]:
    """The LabelMe document for ``lesions`` given as (label, outline in pixels)."""
    shapes: list[dict[str, object]] = []
    for label, outline in lesions:
        polygon = [_clip(p, width, height) for p in outline]
        xs = [p[0] for p in polygon]
        ys = [p[1] for p in polygon]
        slack = rng.uniform(0.5, 4.0, size=4)
        x0, x1 = max(0.0, min(xs) - slack[0]), min(float(width), max(xs) + slack[1])
        y0, y1 = max(0.0, min(ys) - slack[2]), min(float(height), max(ys) + slack[3])
        corners = [
            ((x0, y0), (x1, y1)),
            ((x1, y1), (x0, y0)),
            ((x1, y0), (x0, y1)),
            ((x0, y1), (x1, y0)),
        ][int(rng.integers(4))]
        rectangle = _shape(label, [_round(p) for p in corners], "rectangle")
        outline_shape = _shape(label, [_round(p) for p in polygon], "polygon")
        # Annotators drew the box first more often than not; keep both orders in the data.
        pair = [rectangle, outline_shape] if rng.random() < 0.7 else [outline_shape, rectangle]
        shapes.extend(pair)
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }


def dump_annotation(document: dict[str, object]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _shape(label: str, points: list[list[float]], kind: str) -> dict[str, object]:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": kind,
        "flags": {},
        "mask": None,
    }


def _clip(p: Point, width: int, height: int) -> Point:
    return (min(max(p[0], 0.0), float(width)), min(max(p[1], 0.0), float(height)))


def _round(p: Point) -> list[float]:
    return [round(float(p[0]), 2), round(float(p[1]), 2)]
