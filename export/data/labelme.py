"""Read BTXRD's LabelMe annotations into lesions: one polygon (the outline) plus its rectangle.

BTXRD annotators drew every lesion twice with the same label, a ``rectangle`` and a ``polygon``
inside it. Filling both into one mask gives the bounding box, not the lesion, so the two are
paired here and kept apart: the polygon is the lesion, the rectangle only its box.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from btxrd.runtime.errors import InputError

Point = tuple[float, float]
Box = tuple[float, float, float, float]

# Shape types that carry a lesion. LabelMe also has points, lines and circles; BTXRD uses none.
_LESION_SHAPES = ("rectangle", "polygon")
# A hand-drawn LabelMe outline has tens to hundreds of points; far more is a generated or
# hostile file, and checking a polygon for self-crossings costs the square of its points.
MAX_POLYGON_POINTS = 5_000


class AnnotationError(InputError, ValueError):
    """A LabelMe file that cannot be read as a BTXRD annotation; the message names the file."""


@dataclass(frozen=True)
class Lesion:
    """One annotated lesion. ``polygon`` is the outline; ``rectangle`` is (x0, y0, x1, y1)."""

    label: str
    polygon: tuple[Point, ...] | None
    rectangle: Box | None

    @property
    def mask_source(self) -> str:
        """The shape to fill a lesion mask from: "polygon", or "rectangle" when there is none."""
        return "polygon" if self.polygon is not None else "rectangle"


@dataclass(frozen=True)
class Annotation:
    """A parsed LabelMe file, in the pixel frame of the (EXIF-upright) image it annotates."""

    path: Path
    image_width: int
    image_height: int
    lesions: tuple[Lesion, ...]


def read_annotation(path: str | Path) -> Annotation:
    """Parse one LabelMe 5.x JSON file and pair each rectangle with the polygon inside it."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read annotation ({exc.strerror or exc}).") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(
            f"{path}: not valid JSON ({exc}); re-export it from LabelMe or remove it."
        ) from exc
    except RecursionError:
        raise AnnotationError(
            f"{path}: JSON nested too deeply to be a LabelMe file; re-export it or remove it."
        ) from None
    return _parse_annotation(data, path)


def _parse_annotation(data: object, path: Path) -> Annotation:
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object at the top level of a LabelMe file.")
    width = _positive_int(data, "imageWidth", path)
    height = _positive_int(data, "imageHeight", path)
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise AnnotationError(f"{path}: 'shapes' is missing or not a list; not a LabelMe file?")
    rectangles: list[tuple[str, Box]] = []
    polygons: list[tuple[str, tuple[Point, ...]]] = []
    for index, shape in enumerate(shapes):
        parsed = _parse_shape(shape, index, path)
        if parsed is None:
            continue
        label, kind, points = parsed
        if kind == "rectangle":
            (xa, ya), (xb, yb) = points
            # Annotators drag rectangles from any corner; only min/max is meaningful.
            rectangles.append((label, (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))))
        else:
            polygons.append((label, points))
    return Annotation(path, width, height, _pair_shapes(rectangles, polygons))


def _positive_int(data: dict, key: str, path: Path) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise AnnotationError(
            f"{path}: '{key}' must be a positive number of pixels, got {value!r}."
        )
    if value != int(value):
        raise AnnotationError(f"{path}: '{key}' must be a whole number of pixels, got {value!r}.")
    return int(value)


def _parse_shape(
    shape: object, index: int, path: Path
) -> tuple[str, str, tuple[Point, ...]] | None:
    where = f"{path}: shape {index}"
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where} is not a JSON object.")
    kind = shape.get("shape_type", "polygon")  # LabelMe < 4 omitted it for polygons
    if kind not in _LESION_SHAPES:
        return None
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        raise AnnotationError(f"{where} has no label.")
    raw = shape.get("points")
    if not isinstance(raw, list):
        raise AnnotationError(f"{where} ('{label}') has no list of points.")
    points = tuple(_parse_point(p, where) for p in raw)
    if kind == "rectangle" and len(points) != 2:
        raise AnnotationError(f"{where}: a rectangle needs 2 corner points, got {len(points)}.")
    if kind == "polygon" and len(points) < 3:
        raise AnnotationError(f"{where}: a polygon needs at least 3 points, got {len(points)}.")
    if len(points) > MAX_POLYGON_POINTS:
        raise AnnotationError(
            f"{where}: {len(points):,} points, more than the {MAX_POLYGON_POINTS:,} a drawn "
            "outline has; simplify the polygon in LabelMe."
        )
    return label.strip(), kind, points


def _parse_point(point: object, where: str) -> Point:
    if (
        isinstance(point, (list, tuple))
        and len(point) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
        and all(math.isfinite(v) for v in point)
    ):
        return (float(point[0]), float(point[1]))
    raise AnnotationError(f"{where}: bad point {point!r}; expected [x, y] with finite numbers.")


def _pair_shapes(
    rectangles: list[tuple[str, Box]], polygons: list[tuple[str, tuple[Point, ...]]]
) -> tuple[Lesion, ...]:
    """Give each rectangle the same-label polygon that lies inside it and fits it best."""
    unused = list(range(len(polygons)))
    lesions: list[Lesion] = []
    for label, box in rectangles:
        candidates = [i for i in unused if polygons[i][0] == label and _inside(polygons[i][1], box)]
        if candidates:
            best = max(candidates, key=lambda i: _box_iou(_bounds(polygons[i][1]), box))
            unused.remove(best)
            lesions.append(Lesion(label, polygons[best][1], box))
        else:
            lesions.append(Lesion(label, None, box))
    lesions.extend(Lesion(polygons[i][0], polygons[i][1], None) for i in unused)
    return tuple(lesions)


def _bounds(points: tuple[Point, ...]) -> Box:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _inside(points: tuple[Point, ...], box: Box) -> bool:
    # Hand-drawn polygons stray a little past their rectangle; allow a tenth of its size.
    x0, y0, x1, y1 = box
    slack = max(2.0, 0.1 * max(x1 - x0, y1 - y0))
    px0, py0, px1, py1 = _bounds(points)
    return px0 >= x0 - slack and py0 >= y0 - slack and px1 <= x1 + slack and py1 <= y1 + slack


def _box_iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
