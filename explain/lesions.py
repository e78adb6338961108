"""A sample's lesion mask from its LabelMe annotation, and a CAM's scores against it
(torch-free). Shared by the gallery's notes and the annotation report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from btxrd.explain.scores import DEFAULT_IOU_THRESHOLD, AttentionScores, score_attention
from btxrd.export.data.labelme import read_annotation
from btxrd.export.data.masks import LesionMask, lesion_mask
from btxrd.runtime.errors import InputError
from btxrd.runtime.model.contract import Preprocessing

if TYPE_CHECKING:  # btxrd.explain.cam imports torch
    from btxrd.explain.cam import CamResult


def annotation_mask(
    annotation_path: Path, image_size: tuple[int, int], prep: Preprocessing
) -> tuple[LesionMask | None, str | None]:
    """The lesion mask of an annotation file at the model-input grid, and why it is unusable
    (``None`` when it is usable)."""
    try:
        mask = lesion_mask(read_annotation(annotation_path), image_size, prep)
    except InputError as exc:
        return None, f"annotation unreadable: {exc}"
    return mask, mask.reason


def score_against_mask(
    mask: LesionMask | None,
    mask_reason: str | None,
    result: CamResult,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    cam_grid: tuple[int, int] | None = None,
) -> tuple[AttentionScores | None, str | None]:
    """The CAM's scores against a mask from ``annotation_mask``, or the reason there are none.
    ``cam_grid`` (the target layer's rows, columns) adds the pointing game's reachability."""
    if mask is None or not mask.ok:
        return None, mask_reason
    if not result.ok:
        return None, f"degenerate CAM: {result.problem}"
    return score_attention(result.cam, mask.mask, iou_threshold, cam_grid=cam_grid), None
