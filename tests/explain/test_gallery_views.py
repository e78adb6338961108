"""What a gallery cell shows: the lesion outline on tumour images the model got wrong, too."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from btxrd.explain import render
from btxrd.explain.evaluate import Evaluation, SampleImage
from btxrd.explain.gallery import _views
from btxrd.explain.model import load_explainer
from btxrd.explain.run import ExplainRun
from btxrd.export.data.dataset import load_dataset
from btxrd.runtime.decode.image import load_image

pytestmark = pytest.mark.torch
CLASSES = ("Normal", "Benign", "Malignant")


def _outline_pixels(image) -> int:
    # Pure white appears only where the outline is drawn: the CAM overlay tints everything else.
    return int(np.all(np.asarray(image.convert("RGB")) == render.LESION, axis=-1).sum())


def test_misclassified_tumour_shows_its_lesion_without_a_score(synth_data, tiny_checkpoint):
    samples = load_dataset(synth_data)
    tumour = next(s for s in samples if s.label != "Normal" and s.annotation_path is not None)
    explainer = load_explainer(tiny_checkpoint)
    evaluation = Evaluation(
        samples=(tumour,),
        images=(SampleImage.from_image(load_image(tumour.image_path).image, explainer.prep),),
        y_true=np.array([CLASSES.index(tumour.label)]),
        probabilities=np.array([[0.9, 0.05, 0.05]]),  # called Normal: a false negative
        class_names=CLASSES,
        subset="constructed",
    )
    warnings: list[str] = []
    (missed,) = _views(ExplainRun(explainer, evaluation), [0], "gradcam", 0.45, 0.5, warnings)
    assert warnings == []  # a real CAM was drawn
    assert missed.note == "annotated lesion outlined" and "IoU" not in missed.note
    assert _outline_pixels(missed.image) > 0
