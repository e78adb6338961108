"""The Python API: ``Classifier`` loads a model once; ``predict`` returns a frozen ``Prediction``.

The CLI is a thin layer over this. A ``Classifier`` pickles as its settings and reopens its
session on the other side, so worker processes can each rebuild one cheaply.
"""

from __future__ import annotations

import inspect
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from btxrd.runtime.decode.decoded import DecodedImage, Identifiers
from btxrd.runtime.decode.formats import DICOM_FORMAT
from btxrd.runtime.decode.image import decode_pil, load_image
from btxrd.runtime.errors import BtxrdError, InputError
from btxrd.runtime.model.postprocess import finite_rows, softmax
from btxrd.runtime.model.preprocess import preprocess
from btxrd.runtime.model.session import ModelInfo, ModelOutputs, OnnxModel
from btxrd.runtime.model.verdict import OodVerdict, refusal_message, verdict_for
from btxrd.runtime.settings import DecodeLimits, InferenceSettings
from btxrd.runtime.text import name_text, text_of

_DEFAULTS = InferenceSettings()

ImageSource = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class _Prepared:
    """An input after decoding and preprocessing (or the reason it failed).

    ``image`` is kept only when CAM overlays need it: a look-ahead queue of full-resolution
    radiographs costs about 180 MB of peak memory on 2000 x 2500 JPEGs.
    """

    source: ImageSource
    image: DecodedImage | None
    array: np.ndarray | None
    error: str | None
    decode_ms: float
    notes: tuple[str, ...] = ()
    identifiers: Identifiers | None = None  # DecodedImage.identifiers
    decode: str | None = None  # DecodedImage.decode; None when decoding failed


@dataclass(frozen=True)
class Prediction:
    """One input's result. Exactly one of (``prediction``, ``error``) is set.

    An input the out-of-distribution gate refuses has ``error`` set, ``refused`` True and no
    ``scores``: its probabilities are ``withheld_scores``, which the record keeps for audit inside
    its ``ood`` block only (``btxrd.runtime.model.verdict``)."""

    image_name: str
    path: str | None
    prediction: str | None
    confidence: float | None
    scores: Mapping[str, float]
    error: str | None = None
    notes: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    ood: OodVerdict | None = None  # None: the model has no gate, or the input was not scored
    refused: bool = False
    withheld_scores: Mapping[str, float] | None = None
    # What identifies the input inside its format (a DICOM file's UIDs); None for formats
    # without any, and for inputs never decoded.
    identifiers: Identifiers | None = None
    # How the pixels were decoded: "exact", or "jpeg-draft-1/k" with --fast-decode; None when
    # the input was never decoded.
    decode: str | None = None
    # ``path`` holds escapes (the name is not UTF-8; ``text.name_text``).
    path_escaped: bool = False
    # Uncalibrated softmax of the logits (what --selftest compares); not part of the record.
    softmax: Mapping[str, float] = field(default_factory=dict, repr=False, compare=False)
    # Per-class maps (C, h, w) when asked for with ``with_cam``; not part of the record.
    cam: np.ndarray | None = field(default=None, repr=False, compare=False)
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """The JSON record (the predecessor's fields first)."""
        return {
            "image_name": self.image_name,
            "prediction": self.prediction,
            "confidence": self.confidence,
            "scores": None if self.refused else dict(self.scores),
            "path": self.path,
            "path_escaped": self.path_escaped,
            # Messages quote file names, which may hold bytes that are not UTF-8.
            "error": None if self.error is None else text_of(self.error),
            "notes": [text_of(note) for note in self.notes],
            "ood": None if self.ood is None else self.ood.to_json(self.withheld_scores),
            "identifiers": None if self.identifiers is None else self.identifiers.to_json(),
            # Deprecated since results schema 3 (btxrd 0.1.0, 2026-12): the DICOM fields of
            # ``identifiers``, kept for one release for readers of the old key.
            "dicom": _deprecated_dicom(self.identifiers),
            "decode": self.decode,
            "timings_ms": dict(self.timings_ms),
        }


class Classifier:
    """Classify radiographs with an exported btxrd model on the CPU."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        batch_size: int | None = None,
        limits: DecodeLimits | None = None,
        decode_workers: int | None = None,
        ood_gate: bool = True,
        fast_decode: bool | None = None,
        fast_decode_margin: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        # With a gate in the model, an out-of-distribution input is refused unless this is off.
        self.ood_gate = ood_gate
        # JPEGs decoded at a reduced DCT scale, sides still >= margin x the input's; each
        # record says which decode it got.
        self.fast_decode = _DEFAULTS.fast_decode if fast_decode is None else fast_decode
        self.fast_decode_margin = fast_decode_margin or _DEFAULTS.fast_decode_margin
        self.threads = threads
        self.batch_size = max(1, batch_size or _DEFAULTS.batch_size)
        self.decode_workers = decode_workers or os.cpu_count() or 1
        self.limits = limits or _DEFAULTS.limits
        self._model = OnnxModel(self.model_path, threads=threads)

    @classmethod
    def from_settings(
        cls,
        model_path: str | Path,
        inference: InferenceSettings,
        *,
        ood_gate: bool = True,
        **overrides: Any,
    ) -> Classifier:
        """The classifier the ``inference:`` settings describe: the one way every command
        (``btxrd-run``, ``btxrd-serve``) builds it, so each setting applies to all of them.
        ``overrides``: constructor arguments a command sets from its flags (None: the setting)."""
        arguments: dict[str, Any] = {
            "threads": inference.threads,
            "batch_size": inference.batch_size,
            "limits": inference.limits,
            "fast_decode": inference.fast_decode,
            "fast_decode_margin": inference.fast_decode_margin,
        }
        arguments.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_path, ood_gate=ood_gate, **arguments)

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._model.info.class_names

    def predict(self, source: ImageSource, *, with_cam: bool = False) -> Prediction:
        """Classify one image; raises ``InputError`` if it cannot be read. An image the
        out-of-distribution gate refuses comes back with ``refused`` set and no class."""
        result = next(self._infer([self._prepare(source)], with_cam=with_cam))
        if result.error is not None and not result.refused:
            raise InputError(result.error)
        return result

    def predict_many(
        self,
        sources: Iterable[ImageSource],
        *,
        with_cam: bool = False,
        keep_side: int | None = None,
    ) -> Iterator[Prediction]:
        """Lazily yield one ``Prediction`` per source, in order; failures become error records.

        Decoding runs in a small thread pool ahead of inference (Pillow releases the GIL while
        it decodes and resizes), so large JPEGs do not serialise behind the network.
        ``keep_side``: with ``with_cam``, the image kept with each prediction is reduced to at
        most this many pixels on its longer side as soon as it is preprocessed, so the full-size
        pixels are freed before the batch is scored (None: kept at full size, as ``--cam``
        draws it).
        """
        lookahead = self.batch_size * 2
        iterator = iter(sources)
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="btxrd-decode") as pool:
            pending: deque[Future[_Prepared]] = deque()

            def top_up() -> None:
                while len(pending) < lookahead:
                    try:
                        source = next(iterator)
                    except StopIteration:
                        return
                    pending.append(pool.submit(self._prepare, source, with_cam, keep_side))

            top_up()
            batch: list[_Prepared] = []
            while pending:
                batch.append(pending.popleft().result())
                top_up()
                if len(batch) == self.batch_size:
                    yield from self._infer(batch, with_cam=with_cam)
                    batch = []
            if batch:
                yield from self._infer(batch, with_cam=with_cam)

    def _prepare(
        self, source: ImageSource, keep_image: bool = True, keep_side: int | None = None
    ) -> _Prepared:
        start = time.perf_counter()
        try:
            image = self._decode(source)
            array = preprocess(image, self.info.metadata.preprocessing)
            kept = _reduced(image, keep_side) if keep_image else None
            return _Prepared(
                source, kept, array, None, _ms(start), image.notes, image.identifiers, image.decode
            )
        except BtxrdError as exc:
            return _Prepared(source, None, None, str(exc), _ms(start))
        except Exception as exc:  # per-input fence: one file's surprise never ends the batch
            return _Prepared(source, None, None, unexpected(source, "reading", exc), _ms(start))

    def _infer(self, batch: list[_Prepared], with_cam: bool) -> Iterator[Prediction]:
        arrays = [item.array for item in batch if item.array is not None]
        outputs = None
        infer_ms = 0.0
        if arrays:
            start = time.perf_counter()
            try:
                outputs = self._model.run(np.stack(arrays), with_cam=with_cam)
            except Exception:  # per-input fence: find the input that fails, score the rest
                yield from self._infer_one_by_one(batch, with_cam)
                return
            infer_ms = _ms(start) / len(arrays)
        row = 0
        for item in batch:
            if item.array is None or outputs is None:
                yield self._failure(item.source, item.error or "unknown error", item.decode_ms)
                continue
            yield self._success(item, outputs, row, infer_ms)
            row += 1

    def _infer_one_by_one(self, batch: list[_Prepared], with_cam: bool) -> Iterator[Prediction]:
        for item in batch:
            if item.array is None:
                yield self._failure(item.source, item.error or "unknown error", item.decode_ms)
                continue
            start = time.perf_counter()
            try:
                outputs = self._model.run(item.array[None], with_cam=with_cam)
            except Exception as exc:
                message = unexpected(item.source, "scoring", exc)
                yield self._failure(item.source, message, item.decode_ms)
                continue
            yield self._success(item, outputs, 0, _ms(start))

    def _decode(self, source: ImageSource) -> DecodedImage:
        draft = self._draft_size() if self.fast_decode else None
        if isinstance(source, (str, Path)):
            return load_image(source, self.limits, draft)
        if isinstance(source, Image.Image):
            return decode_pil(source, _name(source), self.limits, draft)
        if isinstance(source, np.ndarray):
            try:
                image = Image.fromarray(source)
            except (TypeError, ValueError) as exc:
                raise InputError(f"<array>: not an image array ({exc})") from None
            return decode_pil(image, _name(source), self.limits)
        raise InputError(f"cannot classify an object of type {type(source).__name__}")

    def _draft_size(self) -> tuple[int, int]:
        """The smallest decoded (width, height) fast decoding may go down to."""
        height, width = self.info.metadata.preprocessing.image_size
        return width * self.fast_decode_margin, height * self.fast_decode_margin

    def _success(
        self, item: _Prepared, outputs: ModelOutputs, row: int, infer_ms: float
    ) -> Prediction:
        names = self.class_names
        source, image = item.source, item.image
        timings = {"decode_preprocess": round(item.decode_ms, 3), "inference": round(infer_ms, 3)}
        logits = outputs.logits[row]
        calibrated = None if outputs.probabilities is None else outputs.probabilities[row]
        if not finite_rows(logits[None])[0] or (
            calibrated is not None and not finite_rows(calibrated[None])[0]
        ):
            message = (
                f"{_path(source) or _name(source)}: the model produced NaN or infinite scores "
                "for this image; no class is given (check the model with btxrd-run --selftest)"
            )
            return self._failure(source, message, item.decode_ms)
        raw = softmax(logits)
        # The calibrated probabilities (softmax(logits / T)) when the model has them: the same
        # argmax as the raw softmax, and confidences that mean what they say.
        probs = raw if calibrated is None else np.asarray(calibrated, dtype=np.float64)
        verdict = self._verdict(outputs, row)
        best = int(np.argmax(probs))
        refused = verdict is not None and verdict.refuses
        notes = item.notes
        if verdict is not None and not verdict.in_distribution and not verdict.gate_on:
            notes = (*notes, f"{verdict.describe()}; classified anyway (--no-ood-gate)")
        cams = outputs.cam
        scores = {n: float(p) for n, p in zip(names, probs, strict=True)}
        return Prediction(
            image_name=_name(source),
            path=_path(source),
            path_escaped=_path_escaped(source),
            prediction=None if refused else names[best],
            confidence=None if refused else float(probs[best]),
            scores={} if refused else scores,
            withheld_scores=scores if refused else None,
            error=(
                refusal_message(_path(source) or _name(source), verdict)
                if refused and verdict is not None
                else None
            ),
            notes=notes,
            timings_ms=timings,
            ood=verdict,
            refused=refused,
            identifiers=item.identifiers,
            decode=item.decode,
            softmax={n: float(p) for n, p in zip(names, raw, strict=True)},
            cam=None if cams is None or refused else cams[row],
            image=image.image if cams is not None and image is not None and not refused else None,
        )

    def _verdict(self, outputs: ModelOutputs, row: int) -> OodVerdict | None:
        trust = self.info.trust
        if trust is None or outputs.ood_score is None:
            return None
        return verdict_for(trust, float(outputs.ood_score[row]), gate_on=self.ood_gate)

    def result_settings(self) -> dict[str, bool]:
        """The settings that change a result (not only its speed): what ``--resume`` checks a
        kept result against, with the model's sha256 and the input's identity."""
        return {"fast_decode": bool(self.fast_decode), "ood_gate": bool(self.ood_gate)}

    def failure(self, source: ImageSource, error: str) -> Prediction:
        """The error record of an input that was never classified (``error`` names the cause)."""
        return self._failure(source, error, 0.0)

    def _failure(self, source, error: str, decode_ms: float) -> Prediction:
        return Prediction(
            image_name=_name(source),
            path=_path(source),
            path_escaped=_path_escaped(source),
            prediction=None,
            confidence=None,
            scores={},
            error=error,
            timings_ms={"decode_preprocess": round(decode_ms, 3)},
        )

    # Pickle as settings; the onnxruntime session is rebuilt on the other side. The settings are
    # the constructor's own parameters, read from its signature, each kept under its own name.
    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _constructor_parameters()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        model_path = state.pop("model_path")
        self.__init__(model_path, **state)  # type: ignore[misc]


def _constructor_parameters() -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(Classifier.__init__).parameters if p != "self")


def _deprecated_dicom(identifiers: Identifiers | None) -> dict[str, str | None] | None:
    """The record's old ``dicom`` key: a DICOM input's identifier fields, None for others."""
    if identifiers is None or identifiers.format != DICOM_FORMAT:
        return None
    return dict(identifiers.fields)


def _reduced(image: DecodedImage, side: int | None) -> DecodedImage:
    """``image``, reduced in place to at most ``side`` pixels on its longer side (None: as it
    is). In place, not on a copy: a copy would hold the full-size pixels twice at the peak."""
    if side is not None and max(image.image.size) > side:
        image.image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return image


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def unexpected(source: ImageSource, doing: str, exc: BaseException) -> str:
    """The error record of an input that raised something btxrd did not foresee."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (
        f"{_path(source) or _name(source)}: unexpected error while {doing} it "
        f"({type(exc).__name__}{': ' + detail if detail else ''}); the batch went on. "
        "This is a btxrd bug: please report it with this line"
    )


def _name(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return text_of(Path(source).name)
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return Path(filename).name if filename else "<image>"
    return "<array>"


def _path(source: ImageSource) -> str | None:
    return name_text(source)[0] if isinstance(source, (str, Path)) else None


def _path_escaped(source: ImageSource) -> bool:
    return name_text(source)[1] if isinstance(source, (str, Path)) else False
