"""Run a checkpoint over a labelled BTXRD-layout folder (or the test part of a split) once, so the
galleries, the annotation scores and the report all share one set of predictions, and decode
every image once: what later steps need of it is kept (``SampleImage``), not the full image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from btxrd.explain import render
from btxrd.explain.gate import Gate
from btxrd.explain.model import Explainer, predict_probabilities
from btxrd.export.data.dataset import DatasetError, Sample, load_dataset, read_split
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import InputError, ModelError
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import resize_for_model, to_input_array
from btxrd.runtime.model.verdict import OodVerdict
from btxrd.runtime.output.progress import progress

Log = Callable[[str], None]
SPLIT_PART = "test"
_CHUNK = 32


def silent(message: str) -> None:
    pass


@dataclass(frozen=True)
class SampleImage:
    """What a run keeps of one decoded image. The full-resolution image is not kept: the demo
    split's 749 test images of up to 1200 px would hold up to a gigabyte as grayscale (three as
    RGB), and every later step needs only these."""

    size: tuple[int, int]  # (width, height) as decoded: lesion masks are drawn at this size
    thumbnail: Image.Image  # fits a render.CELL square, mode kept: every figure draws from it
    # Stretched to the model input, still 8-bit: model inputs are rebuilt from it bit for bit,
    # at a twelfth of the memory of the float32 input (a quarter for RGB).
    model_image: Image.Image

    @classmethod
    def from_image(cls, image: Image.Image, prep: Preprocessing) -> SampleImage:
        return cls(image.size, render.fit(image), resize_for_model(image, prep))

    def model_input(self, prep: Preprocessing) -> np.ndarray:
        """The preprocessed (3, H, W) input, equal to ``preprocess`` of the decoded image."""
        return to_input_array(self.model_image, prep)


@dataclass(frozen=True)
class Evaluation:
    """Samples that decoded, what was kept of their images, their true class indices and
    predicted probabilities."""

    samples: tuple[Sample, ...]
    images: tuple[SampleImage, ...]  # one per sample, in the same order
    y_true: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    subset: str  # what was evaluated, in words
    failed: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (image_id, error)
    # The exported model's out-of-distribution verdict per sample, with its file's identity;
    # empty and None without a gate. Metrics stay on every sample (the model card's figures);
    # the verdicts say which of them btxrd-run would refuse.
    verdicts: tuple[OodVerdict, ...] = ()
    gate: dict[str, Any] | None = None

    @property
    def refused(self) -> list[int]:
        """Indices of the samples the gate finds unlike the training images."""
        return [i for i, v in enumerate(self.verdicts) if not v.in_distribution]

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def select_samples(data: str | Path, split: str | Path | None) -> tuple[list[Sample], str]:
    """Every sample of ``data``, or those in the split file's "test" part."""
    samples = load_dataset(data)
    if split is None:
        return samples, f"all {len(samples)} images of {data}"
    wanted = read_split(split)[SPLIT_PART]
    by_id = {s.image_id: s for s in samples}
    by_stem = {Path(s.image_id).stem: s for s in samples}
    chosen, missing = [], []
    for image_id in wanted:
        sample = by_id.get(image_id) or by_stem.get(Path(image_id).stem)
        (chosen if sample else missing).append(sample or image_id)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{split}: {len(missing)} image(s) of its {SPLIT_PART!r} part are not in {data} "
            f"({shown}); is it the split of this dataset?"
        )
    if not chosen:
        raise DatasetError(f"{split}: its {SPLIT_PART!r} part is empty; nothing to explain")
    return chosen, f"the {SPLIT_PART} part of {split} ({len(chosen)} images of {data})"


def evaluate(
    explainer: Explainer,
    samples: Sequence[Sample],
    subset: str,
    log: Log = silent,
    gate: Gate | None = None,
) -> Evaluation:
    """Predict every sample without gradients, decoding each image once; undecodable images are
    recorded and skipped. With a ``gate``, each sample also gets its out-of-distribution verdict
    from the exported model, on the same input."""
    names = explainer.class_names
    unknown = sorted({s.label for s in samples} - set(names))
    if unknown:
        raise ModelError(
            f"{explainer.checkpoint.path}: the model's classes {list(names)} do not include "
            f"the dataset's {unknown}; use a checkpoint trained on these classes"
        )
    prep = explainer.prep
    kept: list[Sample] = []
    images: list[SampleImage] = []
    failed: list[tuple[str, str]] = []
    chunks: list[np.ndarray] = []
    verdicts: list[OodVerdict] = []
    starts = range(0, len(samples), _CHUNK)
    for start in progress(starts, len(starts), "predicting", "batch", enabled=log is not silent):
        inputs = []
        for sample in samples[start : start + _CHUNK]:
            try:
                image = SampleImage.from_image(load_image(sample.image_path).image, prep)
            except InputError as exc:
                failed.append((sample.image_id, str(exc)))  # reported once, by the caller
                continue
            kept.append(sample)
            images.append(image)
            inputs.append(image.model_input(prep))
        if inputs:
            batch = np.stack(inputs)
            chunks.append(predict_probabilities(explainer.model, batch))
            if gate is not None:
                verdicts.extend(gate.run(batch).verdicts)
    if not kept:
        raise InputError(f"none of the {len(samples)} images could be read; nothing to explain")
    return Evaluation(
        samples=tuple(kept),
        images=tuple(images),
        y_true=np.asarray([names.index(s.label) for s in kept], dtype=np.int64),
        probabilities=np.concatenate(chunks),
        class_names=names,
        subset=subset,
        failed=tuple(failed),
        verdicts=tuple(verdicts),
        gate=None if gate is None else gate.identity(),
    )
