"""What the server does, without the web: uploads in, the records ``btxrd-run --json`` writes out.

Uploads are copied into a private temporary folder (mode 0700, removed when the answer is made)
under names the server chooses (``0001.png``): the client's file name is a label in the record,
never part of a path. Only an allowed image suffix is kept (a DICOM file may be known by it alone).
The files then go through the same ``Classifier`` as ``btxrd-run``: same decode limits, same
messages, same records; the temporary path in a message is replaced by the upload's name.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Any

from btxrd.runtime.decode.formats import image_suffixes
from btxrd.runtime.decode.inputs import display_names
from btxrd.runtime.model.classifier import Classifier, Prediction
from btxrd.runtime.model.verdict import is_refusal
from btxrd.runtime.output.report import model_block, record_of, results_document, summarise
from btxrd.runtime.serve.views import VIEW_MAX_SIDE, View, view_of
from btxrd.runtime.text import name_text

# A file name longer than this is cut in records (file systems stop at 255 bytes anyway).
_MAX_NAME = 255


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the client's name for it (a label) and its bytes."""

    name: str
    data: IO[bytes]


@dataclass(frozen=True)
class Answer:
    """A classification's JSON document and whether every upload was classified."""

    document: dict[str, Any]
    all_classified: bool


class ViewStore:
    """The last ``capacity`` views, by an unguessable id; the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._views: OrderedDict[str, View] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, view: View) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._views[key] = view
            while len(self._views) > self._capacity:
                self._views.popitem(last=False)
        return key

    def get(self, key: str) -> View | None:
        with self._lock:
            return self._views.get(key)

    def clear(self) -> int:
        """Forget every view; how many there were."""
        with self._lock:
            count = len(self._views)
            self._views.clear()
        return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)


class Service:
    """The loaded model and the views of recent results; ``classify`` is called from one worker
    thread at a time (the session already uses every core)."""

    def __init__(self, classifier: Classifier, *, kept_results: int, alpha: float) -> None:
        self.classifier = classifier
        self.alpha = alpha
        self.views = ViewStore(kept_results)

    def model_identity(self) -> dict[str, Any]:
        return model_block(self.classifier.info)

    def classify(self, uploads: Sequence[Upload]) -> Answer:
        """Classify ``uploads`` as ``btxrd-run --json`` would the same files."""
        started = time.perf_counter()
        named = [_label(upload.name, i) for i, upload in enumerate(uploads)]
        labels = [label for label, _ in named]
        shown = display_names([Path(PurePath(label).name) for label in labels])
        with tempfile.TemporaryDirectory(prefix="btxrd-serve-") as folder:
            paths = [
                _spool(upload, Path(folder) / f"{i:04d}{_suffix(label)}")
                for i, (upload, label) in enumerate(zip(uploads, labels, strict=True))
            ]
            predictions = list(
                self.classifier.predict_many(paths, with_cam=True, keep_side=VIEW_MAX_SIDE)
            )
        summary = summarise(predictions, time.perf_counter() - started)
        summary["interrupted"] = False
        records, views = [], []
        for prediction, path, (label, escaped), name in zip(
            predictions, paths, named, shown, strict=True
        ):
            records.append(_relabel(record_of(prediction, name), str(path), label, escaped))
            views.append(self._view(prediction, label))
        document = results_document(
            self.model_identity(),
            records,
            summary,
            views=views,
            errors=[_error_line(record) for record in records if record["error"]],
        )
        return Answer(document, all_classified=summary["failed"] == 0)

    def classify_samples(self) -> Answer:
        """The shipped sample radiographs (``btxrd.models/samples``), as uploads of their names."""
        from btxrd.runtime.decode.inputs import collect_folder
        from btxrd.runtime.paths import default_samples_dir

        paths = collect_folder(default_samples_dir(), recursive=False)
        with contextlib.ExitStack() as files:
            uploads = [Upload(p.name, files.enter_context(p.open("rb"))) for p in paths]
            return self.classify(uploads)

    def _view(self, prediction: Prediction, label: str) -> dict[str, Any] | None:
        """Where the page finds this result's film and heatmaps (None: nothing to show)."""
        if prediction.image is None:
            return None
        name = PurePath(label).name
        view = view_of(
            name,
            prediction.image,
            prediction.cam,
            self.classifier.class_names,
            prediction.scores,
            prediction.prediction,
        )
        key = self.views.add(view)
        base = f"/api/results/{key}"
        return {
            "id": key,
            "film": f"{base}/film.png",
            "heatmaps": {c: f"{base}/heatmap/{c}.png" for c in view.cams},
            "overlays": {c: f"{base}/overlay/{c}.png" for c in view.cams},
        }


def _label(name: str | None, index: int) -> tuple[str, bool]:
    """The upload's name as a record shows it, and whether it is escaped (``text.name_text``:
    a name that is not UTF-8 arrives with its bytes kept, ``app.py``, and is written with
    escapes that cannot collide with a real name's text); cut to a sane length; never opened."""
    text, escaped = name_text((name or "").strip())
    if PurePath(text.replace("\\", "/")).name in ("", ".", ".."):  # no file name in it
        return f"upload-{index + 1}", False
    return text[-_MAX_NAME:], escaped


def _suffix(label: str) -> str:
    suffix = PurePath(label.replace("\\", "/")).suffix.lower()
    return suffix if suffix in image_suffixes() else ""


def _spool(upload: Upload, path: Path) -> Path:
    upload.data.seek(0)
    # O_EXCL through mode "xb": the folder is new and private, so this only guards mistakes.
    with path.open("xb") as handle:
        shutil.copyfileobj(upload.data, handle, 1 << 20)
    return path


def _relabel(record: dict[str, Any], spooled: str, label: str, escaped: bool) -> dict[str, Any]:
    """The record as if the file had been given to ``btxrd-run`` under the upload's name."""
    name = PurePath(label.replace("\\", "/")).name or label
    record["image_name"] = name
    record["path"] = label
    record["path_escaped"] = escaped
    if record["error"]:
        record["error"] = record["error"].replace(spooled, label)
    record["notes"] = [note.replace(spooled, label) for note in record["notes"]]
    return record


def _error_line(record: dict[str, Any]) -> str:
    kind = "not classified" if is_refusal(record) else "error"
    return f"{kind}: {record['error']}"
