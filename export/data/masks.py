"""Lesion masks from LabelMe annotations, in the model input's frame.

LabelMe points refer to the EXIF-upright image (LabelMe applies the orientation when it opens a
file), which is what ``load_image`` returns. Each lesion is filled from its polygon, or from its
rectangle when it has no polygon, at full resolution with Pillow's ``ImageDraw`` (as LabelMe's own
``shape_to_mask`` does), then stretched to the model's input with ``resize_for_model``: the same
geometric transform, in the same code, as the pixels the model sees. A resampled pixel belongs to
the lesion when at least half of it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from btxrd.export.data.labelme import Annotation, Lesion
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import resize_for_model

_INSIDE = 128  # of 255: at least half of a resampled pixel lies in the lesion


@dataclass(frozen=True)
class LesionMask:
    """A boolean (H, W) lesion mask at the model-input grid, or the reason there is none."""

    mask: np.ndarray | None
    lesions: int
    polygons: int  # lesions filled from their polygon
    rectangles: int  # lesions filled from their rectangle because they have no polygon
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.mask is not None

    def describe(self) -> dict[str, object]:
        """How the mask was built, for reports."""
        record: dict[str, object] = {
            "lesions": self.lesions,
            "from_polygon": self.polygons,
            "from_rectangle": self.rectangles,
        }
        if self.rectangles:
            record["note"] = (
                f"{self.rectangles} lesion(s) without a polygon: filled from the rectangle, "
                "which overstates the lesion"
            )
        if self.reason:
            record["reason"] = self.reason
        return record


def rasterise_lesions(lesions: Sequence[Lesion], size: tuple[int, int]) -> np.ndarray:
    """Fill every lesion (polygon first, rectangle when it has none) into a (height, width) mask
    of ``size`` = (width, height), in the annotation's own pixel frame."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for lesion in lesions:
        if lesion.polygon is not None:
            draw.polygon([tuple(p) for p in lesion.polygon], fill=255, outline=255)
        elif lesion.rectangle is not None:
            x0, y0, x1, y1 = lesion.rectangle
            # read_annotation already orders the corners; min/max again costs nothing.
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            draw.rectangle(box, fill=255, outline=255)
    return np.asarray(canvas) > 0


def lesion_mask(
    annotation: Annotation, image_size: tuple[int, int], prep: Preprocessing
) -> LesionMask:
    """The lesion mask of ``annotation`` for an upright image of ``image_size`` = (width, height),
    at the model input's grid (``prep.image_size``)."""
    lesions = annotation.lesions
    polygons = sum(1 for lesion in lesions if lesion.polygon is not None)
    counts = (len(lesions), polygons, len(lesions) - polygons)  # lesions, polygons, rectangles
    width, height = image_size
    frame = (annotation.image_width, annotation.image_height)
    if frame != (width, height):
        reason = (
            f"{annotation.path.name} is for a {frame[0]} x {frame[1]} image but the image is "
            f"{width} x {height} (upright)"
        )
        if frame == (height, width):
            reason += "; the annotation looks made on the image without its EXIF rotation"
        return LesionMask(None, *counts, reason=reason)
    if not lesions:
        return LesionMask(
            None, *counts, reason=f"{annotation.path.name} has no rectangle or polygon"
        )
    for index, lesion in enumerate(lesions):
        problem = polygon_problem(lesion.polygon) if lesion.polygon is not None else None
        if problem:
            reason = (
                f"{annotation.path.name}: the polygon of lesion {index} ({lesion.label}) {problem}"
            )
            return LesionMask(None, *counts, reason=reason)
    full = Image.fromarray(rasterise_lesions(lesions, (width, height)).astype(np.uint8) * 255)
    grid = np.asarray(resize_for_model(full, prep)) >= _INSIDE
    if not grid.any():
        return LesionMask(
            None,
            *counts,
            reason=f"the lesion(s) of {annotation.path.name} cover less than one model-input pixel",
        )
    return LesionMask(grid, *counts)


def polygon_problem(points: Sequence[tuple[float, float]]) -> str | None:
    """Why a polygon cannot stand for a lesion's outline, or None: it has no area, or its edges
    cross (a figure of eight has no single inside, so any mask of it is a guess)."""
    n = len(points)
    area = 0.5 * abs(
        sum(
            points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
            for i in range(n)
        )
    )
    if area < 1.0:
        return "has zero area"
    if _crosses_itself(np.asarray(points, dtype=np.float64)):
        return "crosses itself"
    return None


_PAIR_BLOCK = 512  # edges whose candidate pairs are tested at once


def _crosses_itself(points: np.ndarray) -> bool:
    """Whether two non-neighbouring edges of the closed polygon cross properly.

    Edges are sorted by their left end, so the edges whose x-range can meet edge i form one
    window of that order (from its left end minus the longest edge's width to its right end);
    only those pairs are tested, with numpy. A drawn outline has short edges and small windows;
    ``labelme.MAX_POLYGON_POINTS`` bounds the worst case (a pure-Python double loop over every
    pair took minutes on a polygon of 10^6 points).
    """
    n = len(points)
    starts, ends = points, np.roll(points, -1, axis=0)
    low, high = np.minimum(starts, ends), np.maximum(starts, ends)
    order = np.argsort(low[:, 0], kind="stable")
    sorted_low = low[order, 0]
    widest = float((high[:, 0] - low[:, 0]).max())
    window_start = np.searchsorted(sorted_low, sorted_low - widest, side="left")
    window_end = np.searchsorted(sorted_low, high[order, 0], side="right")
    for first in range(0, n, _PAIR_BLOCK):
        rows = np.arange(first, min(first + _PAIR_BLOCK, n))
        counts = window_end[rows] - window_start[rows]
        at = np.repeat(rows, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        i, j = order[at], order[window_start[at] + offsets]
        # Each pair once; neighbours share an end point (the first and last edges too).
        keep = (j >= i + 2) & ~((i == 0) & (j == n - 1))
        keep &= np.all((low[i] <= high[j]) & (low[j] <= high[i]), axis=-1)
        i, j = i[keep], j[keep]
        a, b, c, d = starts[i], ends[i], starts[j], ends[j]
        if np.any((_side(a, b, c) * _side(a, b, d) < 0) & (_side(c, d, a) * _side(c, d, b) < 0)):
            return True
    return False


def _side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (
        r[..., 0] - p[..., 0]
    )
