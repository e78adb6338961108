"""One ``btxrd-explain`` run over a dataset, shared by the gallery, the annotation scores and the
report: the predictions and what was kept of each image (``evaluate`` decoded each once), and
every CAM and lesion mask asked for so far, so no image is decoded twice and no CAM computed
twice, whichever steps ask for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from btxrd.explain.cam import CamResult, compute_cams
from btxrd.explain.evaluate import Evaluation
from btxrd.explain.lesions import annotation_mask
from btxrd.explain.model import Explainer
from btxrd.export.data.masks import LesionMask
from btxrd.runtime.output.progress import progress

# Model inputs are rebuilt for this many images at a time (pytorch-grad-cam then batches by
# cam.CAM_BATCH): all 749 test inputs at once would take 450 MB of float32.
CAM_CHUNK = 32


@dataclass(frozen=True, eq=False)
class ExplainRun:
    """The explainer and its evaluation, plus caches filled on demand. Frozen apart from the
    caches, which only grow: a CAM or mask, once computed, is the one every step uses."""

    explainer: Explainer
    evaluation: Evaluation
    show_progress: bool = False  # a bar on stderr (on a terminal) while CAMs are computed
    _cams: dict[tuple[int, int, str], CamResult] = field(
        default_factory=dict, init=False, repr=False
    )
    _masks: dict[int, tuple[LesionMask | None, str | None]] = field(
        default_factory=dict, init=False, repr=False
    )

    @cached_property
    def model_identity(self) -> dict[str, Any]:
        """``Explainer.identity()``, asked once: metrics.json, annotation_report.json and
        report.html record the same."""
        return self.explainer.identity()

    def predicted_cams(self, indices: Sequence[int], method: str) -> list[CamResult]:
        """The CAM of each sample's predicted class (indices into the evaluation)."""
        y_pred = self.evaluation.y_pred
        return self.cams(indices, [int(y_pred[i]) for i in indices], method)

    def cams(self, indices: Sequence[int], targets: Sequence[int], method: str) -> list[CamResult]:
        """The CAM of each sample for its target class; only those not asked for before are
        computed, in batches."""
        keys = [(int(i), int(t), method) for i, t in zip(indices, targets, strict=True)]
        missing = [key for key in dict.fromkeys(keys) if key not in self._cams]
        prep = self.explainer.prep
        starts = range(0, len(missing), CAM_CHUNK)
        bar = progress(starts, len(starts), "computing CAMs", "batch", self.show_progress)
        for start in bar:
            part = missing[start : start + CAM_CHUNK]
            inputs = np.stack([self.evaluation.images[i].model_input(prep) for i, _, _ in part])
            results = compute_cams(
                self.explainer.model,
                self.explainer.target_layer,
                inputs,
                [target for _, target, _ in part],
                method,
                reshape=self.explainer.cam_reshape,
            )
            self._cams.update(zip(part, results, strict=True))
        return [self._cams[key] for key in keys]

    def lesion_mask(self, index: int) -> tuple[LesionMask | None, str | None]:
        """The sample's lesion mask at the model-input grid and why it is unusable (``None``
        when usable); ``(None, reason)`` for a sample without an annotation file."""
        if index not in self._masks:
            sample = self.evaluation.samples[index]
            if sample.annotation_path is None:
                self._masks[index] = (None, "no annotation")
            else:
                size = self.evaluation.images[index].size
                self._masks[index] = annotation_mask(
                    sample.annotation_path, size, self.explainer.prep
                )
        return self._masks[index]
