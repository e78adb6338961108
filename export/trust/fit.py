"""Fit trust at export: run the network over a BTXRD-layout folder and its split, fit the
temperature on the validation split, the out-of-distribution statistics on the training split,
and set the gate's threshold on the validation split.

The network runs as an onnxruntime "probe" graph (logits and pooled features) on the runtime's
own decoding and preprocessing, so the statistics describe exactly what ``btxrd-run`` will see;
it is also four times faster than PyTorch on this CPU. Export's parity check then compares the
final file with an independent PyTorch + numpy computation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

from btxrd.export.data.dataset import (
    SPLIT_FRACTIONS,
    SPLIT_NAMES,
    DatasetError,
    Sample,
    load_dataset,
    read_split,
    split_dataset,
    split_json,
)
from btxrd.export.trust.calibration import calibration_metrics, fit_temperature, softmax
from btxrd.export.trust.defaults import DEFAULT_METHOD, DEFAULT_RETENTION, MIN_VAL_PER_CLASS
from btxrd.export.trust.ood import OodScorer, fit_scorer, threshold_at
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import BtxrdError
from btxrd.runtime.labels.folders import read_labelled
from btxrd.runtime.labels.metrics import ECE_BINS
from btxrd.runtime.model.contract import (
    INPUT_NAME,
    LOGITS_NAME,
    OOD_METHODS,
    Calibration,
    FittedOn,
    OodGate,
    Preprocessing,
    Trust,
)
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import session_options
from btxrd.runtime.output.progress import progress

VAL_FRACTION = SPLIT_FRACTIONS[1]
_BATCH = 32
_PROBE_FEATURES = "features"  # btxrd.export.onnx_export.FEATURES_NAME


@dataclass(frozen=True, eq=False)
class Scored:
    """The probe's outputs on a list of images: logits (N, C) and pooled features (N, K),
    float64, in the order given; ``failed`` maps a path that could not be decoded to why."""

    paths: tuple[Path, ...]
    logits: np.ndarray
    features: np.ndarray
    failed: dict[Path, str]


class Probe:
    """The network's logits and pooled taps (concatenated) through onnxruntime."""

    def __init__(self, graph: bytes, prep: Preprocessing, threads: int | None = None) -> None:
        self.prep = prep
        self.session = ort.InferenceSession(
            graph, session_options(threads), providers=["CPUExecutionProvider"]
        )

    def run(self, paths: Sequence[Path], *, strict: bool = True) -> Scored:
        """Score every image; with ``strict`` an image that cannot be decoded is an error
        naming it, otherwise it is left out and listed in ``failed``."""
        kept: list[Path] = []
        logits: list[np.ndarray] = []
        features: list[np.ndarray] = []
        failed: dict[Path, str] = {}
        with ThreadPoolExecutor(2, thread_name_prefix="btxrd-trust") as pool:
            starts = range(0, len(paths), _BATCH)
            for start in progress(starts, len(starts), "scoring", "batch"):
                chunk = list(paths[start : start + _BATCH])
                arrays = []
                for path, (array, error) in zip(chunk, pool.map(self._prepare, chunk), strict=True):
                    if error is not None:
                        if strict:
                            raise DatasetError(f"{error}; fix or remove the image")
                        failed[path] = error
                        continue
                    kept.append(path)
                    arrays.append(array)
                if arrays:
                    out = self.session.run(
                        [LOGITS_NAME, _PROBE_FEATURES], {INPUT_NAME: np.stack(arrays)}
                    )
                    logits.append(out[0].astype(np.float64))
                    features.append(out[1].astype(np.float64))
        classes = self.session.get_outputs()[0].shape[1]
        return Scored(
            paths=tuple(kept),
            logits=np.concatenate(logits) if logits else np.zeros((0, classes)),
            features=np.concatenate(features) if features else np.zeros((0, 0)),
            failed=failed,
        )

    def _prepare(self, path: Path) -> tuple[np.ndarray | None, str | None]:
        try:
            return preprocess(load_image(path), self.prep), None
        except BtxrdError as exc:
            return None, str(exc)


@dataclass(frozen=True, eq=False)
class Part:
    """One split part of the fitting data, scored."""

    name: str
    labels: np.ndarray
    scored: Scored


@dataclass(frozen=True)
class DataSource:
    """Where fitting data came from: the folder's (or CSV's) name, not its path, and the split:
    a split file's name and sha256, or, for the split made at export, its sha256 and text
    (``split_text``; export writes it beside the model and names that file)."""

    data: str
    layout: str = "btxrd"  # as btxrd.runtime.labels.folders.LAYOUTS
    split_file: str | None = None
    split_sha256: str | None = None
    split_text: str | None = field(default=None, repr=False)

    def fitted_on(self, part: Part) -> FittedOn:
        return FittedOn(
            data=self.data,
            split=part.name,
            num_images=len(part.labels),
            split_file=self.split_file,
            split_sha256=self.split_sha256,
        )


@dataclass(frozen=True, eq=False)
class TrustFit:
    """What export puts into the file: the metadata and the statistics of the graph."""

    trust: Trust
    temperature: float
    scorer: OodScorer


def split_parts(
    data: Path,
    split_file: Path | None,
    class_names: Sequence[str],
    *,
    min_val_per_class: int = MIN_VAL_PER_CLASS,
) -> tuple[dict[str, list[Sample]], DataSource]:
    """The train/val/test samples of ``data`` (any layout ``btxrd.runtime.labels.folders``
    reads) per ``split_file``, or without one the stratified seed-0 split training makes (its
    file text is ``DataSource.split_text``, for export to write beside the model), and where
    they came from.

    ``DatasetError`` for a split that does not fit the data, a class missing from train, or a
    class with fewer than ``min_val_per_class`` validation images: a temperature and a
    threshold set on fewer say little."""
    samples, layout = labelled_samples(data, class_names)
    by_id = {s.image_id: s for s in samples}
    if split_file is None:
        parts = split_dataset(samples, seed=0)
        text = split_json(parts)
        source = DataSource(
            data=data.resolve().name,
            layout=layout,
            split_sha256=hashlib.sha256(text.encode()).hexdigest(),
            split_text=text,
        )
    else:
        ids = read_split(split_file)
        unknown = [i for name in SPLIT_NAMES for i in ids[name] if i not in by_id]
        if unknown:
            raise DatasetError(
                f"{split_file}: {len(unknown)} image id(s) are not in {data} (first: "
                f"{unknown[0]}); pass the split file made for this data"
            )
        parts = {name: [by_id[i] for i in ids[name]] for name in SPLIT_NAMES}
        source = DataSource(
            data=data.resolve().name,
            layout=layout,
            split_file=split_file.name,
            split_sha256=hashlib.sha256(split_file.read_bytes()).hexdigest(),
        )
    foreign = sorted({s.label for part in parts.values() for s in part} - set(class_names))
    if foreign:
        raise DatasetError(
            f"{data}: labels {foreign} are not among the model's classes {list(class_names)}"
        )
    for name in SPLIT_NAMES:
        if not parts[name]:
            raise DatasetError(
                f"{split_file or data}: the {name} split is empty; calibration needs images "
                "in train, val and test"
            )
    absent = [c for c in class_names if not any(s.label == c for s in parts["train"])]
    if absent:
        raise DatasetError(
            f"{split_file or data}: no training images of {', '.join(absent)}; the "
            "out-of-distribution statistics need every class"
        )
    _check_enough(parts["val"], class_names, min_val_per_class, split_file or data)
    return parts, source


def labelled_samples(data: Path, class_names: Sequence[str]) -> tuple[list[Sample], str]:
    """Every labelled image of ``data`` as a ``Sample``, and the layout: a BTXRD-layout folder
    through ``load_dataset`` (sheet rows, annotations), an ImageFolder or a CSV through the
    runtime's reader; ``DatasetError`` naming the first image that is not there."""
    labelled = read_labelled(data, class_names)
    if labelled.layout == "btxrd":
        return load_dataset(data), labelled.layout
    missing = [image for image in labelled.images if not image.path.is_file()]
    if missing:
        raise DatasetError(
            f"{data}: {len(missing)} labelled image(s) are not there (first: {missing[0].key}, "
            f"looked for {missing[0].path}); image paths are relative to the CSV's folder"
        )
    samples = [
        Sample(image.key, image.path, image.label, None, None, MappingProxyType({}))
        for image in labelled.images
    ]
    return samples, labelled.layout


def _check_enough(
    val: Sequence[Sample], class_names: Sequence[str], minimum: int, where: Path
) -> None:
    counts = {name: sum(s.label == name for s in val) for name in class_names}
    short = {name: n for name, n in counts.items() if n < minimum}
    if short:
        shown = ", ".join(f"{n} {name}" for name, n in short.items())
        raise DatasetError(
            f"{where}: too few images for a trustworthy calibration and gate: the val split has "
            f"{shown}, and each class needs at least {minimum} (about "
            f"{math.ceil(minimum / VAL_FRACTION)} images per class with a {VAL_FRACTION:.0%} val "
            "split); add labelled images, or lower --min-val-per-class to accept a weaker fit"
        )


def score_parts(
    probe: Probe,
    parts: dict[str, list[Sample]],
    class_names: Sequence[str],
    log: Callable[[str], None] | None = None,
) -> dict[str, Part]:
    scored = {}
    for name in SPLIT_NAMES:
        if log:
            log(f"scoring the {len(parts[name])} {name} images")
        labels = np.array([class_names.index(s.label) for s in parts[name]])
        scored[name] = Part(name, labels, probe.run([s.image_path for s in parts[name]]))
    return scored


def fit_trust(
    parts: dict[str, Part],
    source: DataSource,
    num_classes: int,
    widths: Sequence[int],
    *,
    method: str = DEFAULT_METHOD,
    retention: float = DEFAULT_RETENTION,
) -> TrustFit:
    """Temperature on ``val``, its figures on ``test``; the OOD statistics on ``train`` and
    the threshold at ``retention`` on ``val``. ``widths``: channels per tap of the probe's
    concatenated features (``btxrd.export.trust.taps.tap_widths``)."""
    if method not in OOD_METHODS:
        raise ValueError(f"unknown OOD method {method!r}; known: {OOD_METHODS}")
    train, val, test = parts["train"], parts["val"], parts["test"]
    temperature = fit_temperature(val.scored.logits, val.labels)
    metrics = {
        "split": "test",
        "num_images": len(test.labels),
        "ece_bins": ECE_BINS,
        "before": _rounded(calibration_metrics(softmax(test.scored.logits), test.labels)),
        "after": _rounded(
            calibration_metrics(softmax(test.scored.logits, temperature), test.labels)
        ),
    }
    scorer = fit_scorer(method, widths, train.scored.features, train.labels, num_classes)
    threshold = threshold_at(scorer.score(val.scored.features, val.scored.logits), retention)
    on = source.fitted_on
    trust = Trust(
        calibration=Calibration(temperature=temperature, fitted_on=on(val), metrics=metrics),
        ood=OodGate(
            method=method,
            threshold=threshold,
            retention=retention,
            fitted_on=on(train),
            threshold_set_on=on(val),
            details=scorer.details(),
        ),
    )
    return TrustFit(trust=trust, temperature=temperature, scorer=scorer)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in values.items()}
