"""How well a CAM points at the annotated lesion. All scores use the CAM resampled to the mask's
grid (the model-input grid), with the CAM min-max normalised to [0, 1].

- IoU at a threshold: the CAM binarised as ``cam >= threshold`` against the lesion mask. 0.5 is
  the predecessor's figure; the thresholds 0.1 ... 0.9 and the best of them show whether a low
  IoU means "wrong place" or only "blob of the wrong size".
- Pointing game: is the CAM's maximum inside the lesion? (Ties: every pixel within 1e-6 of the
  maximum counts; it is a hit when at least half of them are inside. No tolerance margin.)
- Pointing ceiling: could *any* CAM on the target layer's grid hit this lesion? A CAM is a
  coarse grid upsampled bilinearly, so its maximum always sits on a cell centre (ties aside); a
  lesion that holds no cell centre is a miss for every map. The share of reachable lesions is the
  best hit rate a model with that grid can score: set the pointing game against it.
- Energy in lesion: the share of the CAM's total mass inside the lesion; compare it with
  ``lesion_fraction``, the share a uniform map would get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from btxrd.runtime.output.overlay import resize_cam
from btxrd.runtime.settings import GradcamSettings

THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
DEFAULT_IOU_THRESHOLD: float = GradcamSettings.iou_threshold
_TIE = 1e-6


@dataclass(frozen=True)
class AttentionScores:
    iou: float  # at the report's threshold
    iou_best: float
    best_threshold: float
    iou_by_threshold: dict[str, float]  # "0.1" -> IoU
    pointing_hit: bool
    energy_in_lesion: float
    lesion_fraction: float
    pointing_reachable: bool | None = None  # None when the CAM's grid is not known

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape; 0.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def on_grid(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The CAM bilinearly resampled to ``shape`` (height, width) and min-max normalised."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != tuple(shape):
        cam = resize_cam(cam, (shape[1], shape[0]))
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def iou_at(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    return mask_iou(on_grid(cam, mask.shape) >= threshold, mask)


def iou_by_threshold(
    cam: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> dict[float, float]:
    grid = on_grid(cam, mask.shape)
    return {float(t): mask_iou(grid >= t, mask) for t in thresholds}


def pointing_hit(cam: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the CAM's maximum lies in the lesion (see the module docstring for ties)."""
    grid = on_grid(cam, mask.shape)
    peak = grid >= grid.max() - _TIE
    return 2 * int(np.count_nonzero(peak & mask)) >= int(np.count_nonzero(peak))


def cell_peaks(cells: int, size: int) -> list[np.ndarray]:
    """For each of ``cells`` grid cells along one axis, the pixels (of ``size``) where that cell
    alone, upsampled bilinearly, is largest. Half-pixel centres, clamped at the borders: the
    convention of OpenCV's INTER_LINEAR (pytorch-grad-cam) and Pillow's bilinear upsampling, so
    a border cell peaks everywhere between the border and its centre."""
    source = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    peaks = []
    for cell in range(cells):
        weight = np.maximum(0.0, 1.0 - np.abs(source - cell))
        peaks.append(np.flatnonzero(weight >= weight.max() - _TIE))
    return peaks


def pointing_reachable(mask: np.ndarray, grid: tuple[int, int]) -> bool:
    """Whether a CAM on a ``grid`` = (rows, columns) map can score a pointing-game hit on
    ``mask``: some cell's upsampled peak counts as a hit under the rule of ``pointing_hit``."""
    mask = np.asarray(mask, dtype=bool)
    rows, columns = (cell_peaks(n, size) for n, size in zip(grid, mask.shape, strict=True))
    for row in rows:
        band = mask[row]
        for column in columns:
            if 2 * int(np.count_nonzero(band[:, column])) >= len(row) * len(column):
                return True
    return False


def energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the CAM's mass inside ``mask``; ``None`` for an all-zero CAM."""
    grid = on_grid(cam, mask.shape)
    total = float(grid.sum(dtype=np.float64))
    return (
        float(grid[np.asarray(mask, dtype=bool)].sum(dtype=np.float64)) / total if total else None
    )


def score_attention(
    cam: np.ndarray,
    mask: np.ndarray,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    thresholds: Sequence[float] = THRESHOLDS,
    cam_grid: tuple[int, int] | None = None,
) -> AttentionScores:
    """Every score for one CAM against one non-empty lesion mask; ``cam_grid``, the target
    layer's (rows, columns), adds whether a hit was reachable at all."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the lesion mask is empty; there is nothing to score against")
    by_threshold = iou_by_threshold(cam, mask, thresholds)
    best_threshold = max(by_threshold, key=lambda t: (by_threshold[t], -t))  # lowest on ties
    energy = energy_in_mask(cam, mask)
    return AttentionScores(
        iou=iou_at(cam, mask, iou_threshold),
        iou_best=by_threshold[best_threshold],
        best_threshold=best_threshold,
        iou_by_threshold={f"{t:g}": v for t, v in by_threshold.items()},
        pointing_hit=pointing_hit(cam, mask),
        energy_in_lesion=0.0 if energy is None else energy,
        lesion_fraction=float(mask.mean()),
        pointing_reachable=None if cam_grid is None else pointing_reachable(mask, cam_grid),
    )


def summarise(values: Sequence[float | bool | None]) -> dict[str, float | int | None]:
    """Mean, median and count of the non-null values."""
    present = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    if not len(present):
        return {"mean": None, "median": None, "n": 0}
    return {"mean": float(present.mean()), "median": float(np.median(present)), "n": len(present)}
