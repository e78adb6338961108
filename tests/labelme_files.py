"""LabelMe 5.x annotation files written by the tests (the format BTXRD's annotators used)."""

from __future__ import annotations

import json
from pathlib import Path


def write_labelme(path: Path, width: int, height: int, shapes: list[tuple[str, str, list]]) -> Path:
    """A LabelMe 5.x file with ``shapes`` = [(label, shape_type, points), ...]."""
    document = {
        "version": "5.4.1",
        "flags": {},
        "shapes": [
            {
                "label": label,
                "points": [list(map(float, p)) for p in points],
                "group_id": None,
                "description": "",
                "shape_type": kind,
                "flags": {},
                "mask": None,
            }
            for label, kind, points in shapes
        ],
        "imagePath": path.with_suffix(".jpeg").name,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path
