"""The Python API: ``Classifier`` loads a model once; ``predict`` returns a frozen ``Prediction``.

The CLI is a thin layer over this. A ``Classifier`` pickles as its settings and reopens its
session on the other side, so worker processes can each rebuild one cheaply.
"""

from __future__ import annotations

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

from btxrd.runtime.errors import BtxrdError, InputError
from btxrd.runtime.imageio import DecodedImage, DecodeLimits, decode_pil, load_image
from btxrd.runtime.model import ModelInfo, OnnxModel
from btxrd.runtime.postprocess import finite_rows, softmax
from btxrd.runtime.preprocess import preprocess
from btxrd.runtime.settings import InferenceSettings
from btxrd.runtime.text import text_of

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


@dataclass(frozen=True)
class Prediction:
    """One input's result. Exactly one of (``prediction``, ``error``) is set."""

    image_name: str
    path: str | None
    prediction: str | None
    confidence: float | None
    scores: Mapping[str, float]
    error: str | None = None
    notes: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
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
            "scores": dict(self.scores),
            "path": self.path,
            # Messages quote file names, which may hold bytes that are not UTF-8.
            "error": None if self.error is None else text_of(self.error),
            "notes": [text_of(note) for note in self.notes],
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
    ) -> None:
        self.model_path = Path(model_path)
        self.threads = threads
        self.batch_size = max(1, batch_size or _DEFAULTS.batch_size)
        self.decode_workers = decode_workers or os.cpu_count() or 1
        self.limits = limits or _DEFAULTS.limits
        self._model = OnnxModel(self.model_path, threads=threads)

    @property
    def info(self) -> ModelInfo:
        return self._model.info

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._model.info.class_names

    def predict(self, source: ImageSource, *, with_cam: bool = False) -> Prediction:
        """Classify one image; raises ``InputError`` if it cannot be read."""
        result = next(self._infer([self._prepare(source)], with_cam=with_cam))
        if result.error is not None:
            raise InputError(result.error)
        return result

    def predict_many(
        self, sources: Iterable[ImageSource], *, with_cam: bool = False
    ) -> Iterator[Prediction]:
        """Lazily yield one ``Prediction`` per source, in order; failures become error records.

        Decoding runs in a small thread pool ahead of inference (Pillow releases the GIL while
        it decodes and resizes), so large JPEGs do not serialise behind the network.
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
                    pending.append(pool.submit(self._prepare, source, with_cam))

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

    def _prepare(self, source: ImageSource, keep_image: bool = True) -> _Prepared:
        start = time.perf_counter()
        try:
            image = self._decode(source)
            array = preprocess(image, self.info.metadata.preprocessing)
            kept = image if keep_image else None
            return _Prepared(source, kept, array, None, _ms(start), image.notes)
        except BtxrdError as exc:
            return _Prepared(source, None, None, str(exc), _ms(start))
        except Exception as exc:  # per-input fence: one file's surprise never ends the batch
            return _Prepared(source, None, None, unexpected(source, "reading", exc), _ms(start))

    def _infer(self, batch: list[_Prepared], with_cam: bool) -> Iterator[Prediction]:
        arrays = [item.array for item in batch if item.array is not None]
        logits = np.empty((0, len(self.class_names)), dtype=np.float32)
        cams = None
        infer_ms = 0.0
        if arrays:
            start = time.perf_counter()
            try:
                logits, cams = self._model.run(np.stack(arrays), with_cam=with_cam)
            except Exception:  # per-input fence: find the input that fails, score the rest
                yield from self._infer_one_by_one(batch, with_cam)
                return
            infer_ms = _ms(start) / len(arrays)
        row = 0
        for item in batch:
            if item.array is None:
                yield self._failure(item.source, item.error or "unknown error", item.decode_ms)
                continue
            yield self._success(item, logits[row], cams, row, infer_ms)
            row += 1

    def _infer_one_by_one(self, batch: list[_Prepared], with_cam: bool) -> Iterator[Prediction]:
        for item in batch:
            if item.array is None:
                yield self._failure(item.source, item.error or "unknown error", item.decode_ms)
                continue
            start = time.perf_counter()
            try:
                logits, cams = self._model.run(item.array[None], with_cam=with_cam)
            except Exception as exc:
                message = unexpected(item.source, "scoring", exc)
                yield self._failure(item.source, message, item.decode_ms)
                continue
            yield self._success(item, logits[0], cams, 0, _ms(start))

    def _decode(self, source: ImageSource) -> DecodedImage:
        if isinstance(source, (str, Path)):
            return load_image(source, self.limits)
        if isinstance(source, Image.Image):
            return decode_pil(source, _name(source), self.limits)
        if isinstance(source, np.ndarray):
            try:
                image = Image.fromarray(source)
            except (TypeError, ValueError) as exc:
                raise InputError(f"<array>: not an image array ({exc})") from None
            return decode_pil(image, _name(source), self.limits)
        raise InputError(f"cannot classify an object of type {type(source).__name__}")

    def _success(self, item: _Prepared, logits, cams, row: int, infer_ms: float) -> Prediction:
        names = self.class_names
        source, image = item.source, item.image
        timings = {"decode_preprocess": round(item.decode_ms, 3), "inference": round(infer_ms, 3)}
        if not finite_rows(logits[None])[0]:
            message = (
                f"{_path(source) or _name(source)}: the model produced NaN or infinite scores "
                "for this image; no class is given (check the model with btxrd-run --selftest)"
            )
            return self._failure(source, message, item.decode_ms)
        probs = softmax(logits)
        best = int(np.argmax(probs))
        return Prediction(
            image_name=_name(source),
            path=_path(source),
            prediction=names[best],
            confidence=float(probs[best]),
            scores={n: float(p) for n, p in zip(names, probs, strict=True)},
            notes=item.notes,
            timings_ms=timings,
            cam=None if cams is None else cams[row],
            image=image.image if cams is not None and image is not None else None,
        )

    def failure(self, source: ImageSource, error: str) -> Prediction:
        """The error record of an input that was never classified (``error`` names the cause)."""
        return self._failure(source, error, 0.0)

    def _failure(self, source, error: str, decode_ms: float) -> Prediction:
        return Prediction(
            image_name=_name(source),
            path=_path(source),
            prediction=None,
            confidence=None,
            scores={},
            error=error,
            timings_ms={"decode_preprocess": round(decode_ms, 3)},
        )

    # Pickle as settings; the onnxruntime session is rebuilt on the other side.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "limits": self.limits,
            "decode_workers": self.decode_workers,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["model_path"],
            threads=state["threads"],
            batch_size=state["batch_size"],
            limits=state["limits"],
            decode_workers=state["decode_workers"],
        )


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
    return text_of(source) if isinstance(source, (str, Path)) else None
