"""Single images: predict without gradients, compute the CAM of the predicted class (or a chosen
one) and write ``{stem}_gradcam.png``: the overlay at the image's own size, with its caption and
colour scale below (``btxrd.runtime.output.overlay.explained_overlay``) and the facts as PNG text
metadata. Records have the fields of ``btxrd-run``'s (``results.schema.json``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from btxrd.explain import render
from btxrd.explain.cam import compute_cams
from btxrd.explain.gate import Gate
from btxrd.explain.methods import METHODS
from btxrd.explain.model import Explainer, load_input, predict_probabilities
from btxrd.runtime.decode.decoded import DecodedImage
from btxrd.runtime.decode.inputs import display_names, output_names
from btxrd.runtime.errors import InputError
from btxrd.runtime.model.classifier import Prediction
from btxrd.runtime.model.contract import intended_use_for
from btxrd.runtime.model.verdict import OodVerdict, refusal_message
from btxrd.runtime.output.overlay import caption_for, explained_overlay
from btxrd.runtime.output.report import record_of
from btxrd.runtime.settings import GradcamSettings
from btxrd.runtime.text import name_text, text_of

OVERLAY_SUFFIX = "_gradcam.png"
_CHUNK = 16


def explain_images(
    explainer: Explainer,
    paths: Sequence[Path],
    out: Path,
    *,
    method: str = GradcamSettings.method,
    class_name: str | None = None,
    alpha: float = GradcamSettings.alpha,
    gate: Gate | None = None,
) -> Iterator[dict[str, Any]]:
    """One record per input, in input order (the predecessor's ``image_name``, ``prediction``,
    ``confidence``, ``scores``; plus ``ood``, ``cam_class`` and ``overlay``, or ``error``).

    With a ``gate``, scores are the exported model's calibrated probabilities and an input it
    finds unlike the training images gets no class and no overlay (its scores stay, for audit)."""
    names = output_names(list(paths), None, OVERLAY_SUFFIX)
    shown = display_names(list(paths))
    fixed = None if class_name is None else explainer.class_names.index(class_name)
    for start in range(0, len(paths), _CHUNK):
        chunk = range(start, min(start + _CHUNK, len(paths)))
        records = {}
        loaded = {}
        for i in chunk:
            try:
                loaded[i] = load_input(paths[i], explainer.prep)
            except InputError as exc:
                records[i] = _record(paths[i], shown[i], None)
                records[i]["error"] = str(exc)
            else:
                records[i] = _record(paths[i], shown[i], loaded[i][0])
        if loaded:
            batch = np.stack([array for _, array in loaded.values()])
            verdicts, probabilities = _scores(explainer, gate, batch)
            targets = [int(row.argmax()) if fixed is None else fixed for row in probabilities]
            for i, row, target, verdict in zip(
                loaded, probabilities, targets, verdicts, strict=True
            ):
                _describe(records[i], explainer.class_names, row, target, verdict)
            # An input the gate refuses gets no class and no map, as with btxrd-run --cam.
            explained = [n for n, i in enumerate(loaded) if records[i]["prediction"] is not None]
            results = compute_cams(
                explainer.model,
                explainer.target_layer,
                batch[explained],
                [targets[n] for n in explained],
                method,
                reshape=explainer.cam_reshape,
            )
            indices = list(loaded)
            for n, result in zip(explained, results, strict=True):
                i = indices[n]
                record = records[i]
                if not result.ok:
                    record["error"] = (
                        f"{paths[i]}: no overlay written for {record['cam_class']}: "
                        f"{result.problem}"
                    )
                    continue
                image = loaded[i][0].image
                target_name = record["cam_class"]
                probability = record["scores"][target_name]
                caption = caption_for(target_name, probability, METHODS[method])
                picture = explained_overlay(image, result.cam, caption, alpha=alpha)
                metadata = {
                    "image": str(paths[i]),
                    "class": target_name,
                    "probability": f"{probability:.6f}",
                    "method": method,
                    "checkpoint_sha256": explainer.checkpoint.sha256,
                    "intended_use": intended_use_for(explainer.demo),
                }
                path = render.save_png(picture, out / names[i], metadata)
                record["overlay"] = str(path)
        yield from records.values()


def _record(path: Path, display_name: str, decoded: DecodedImage | None) -> dict[str, Any]:
    """The record ``btxrd-run`` writes for the input (``report.record_of``, the one record
    builder), plus explain's ``cam_class`` and ``overlay``; filled in as it is explained."""
    path_text, escaped = name_text(path)
    read = Prediction(
        image_name=text_of(Path(path).name),
        path=path_text,
        path_escaped=escaped,
        prediction=None,
        confidence=None,
        scores={},
        notes=() if decoded is None else decoded.notes,
        identifiers=None if decoded is None else decoded.identifiers,
        decode=None if decoded is None else decoded.decode,
    )
    return {**record_of(read, display_name), "cam_class": None, "overlay": None}


def _scores(
    explainer: Explainer, gate: Gate | None, batch: np.ndarray
) -> tuple[list[OodVerdict | None], np.ndarray]:
    """Each input's verdict and probabilities: the exported model's calibrated ones when there is
    a gate (what btxrd-run reports for the file), the checkpoint's softmax otherwise."""
    if gate is None:
        return [None] * len(batch), predict_probabilities(explainer.model, batch)
    result = gate.run(batch)
    return list(result.verdicts), result.probabilities


def _describe(
    record: dict[str, Any], names, row: np.ndarray, target: int, verdict: OodVerdict | None
) -> None:
    scores = {name: float(p) for name, p in zip(names, row, strict=True)}
    if verdict is not None and verdict.refuses:
        record["scores"] = None
        record["ood"] = verdict.to_json(withheld=scores)
        record["error"] = refusal_message(record["path"], verdict)
        return
    record["scores"] = scores
    record["ood"] = None if verdict is None else verdict.to_json()
    predicted = int(row.argmax())
    record["prediction"] = names[predicted]
    record["confidence"] = float(row[predicted])
    record["cam_class"] = names[target]
