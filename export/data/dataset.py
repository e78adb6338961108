"""Load a BTXRD-layout folder (real or synthetic) into samples, and split it reproducibly.

The real archive has quirks a loader must survive: ``Annotations/`` or ``annotations/``, a
duplicate nested ``Annotations/Annotations/``, Excel lock files (``~$dataset(total).xlsx``),
``.jpg`` and ``.jpeg`` side by side, and a sheet whose ``image_id`` extension may not match the
file on disk. Images are matched by stem, and only the top level of each folder is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from btxrd.export.data.labelme import Annotation, AnnotationError, Lesion, read_annotation
from btxrd.runtime.labels.sheet import (
    BTXRD_CLASSES,
    BTXRD_IMAGE_SUFFIXES,
    DatasetError,
    find_dir,
    find_root,
    label_from_row,
    read_rows,
)
from btxrd.runtime.output.atomic import write_text

__all__ = [
    "BTXRD_CLASSES",
    "METADATA_COLUMNS",
    "SPLIT_FRACTIONS",
    "SPLIT_NAMES",
    "Annotation",
    "AnnotationError",
    "DatasetError",
    "Lesion",
    "Sample",
    "label_from_row",
    "load_dataset",
    "read_annotation",
    "read_split",
    "split_dataset",
    "split_json",
    "write_split",
]


# The sheet's 37 columns in the archive's order; the spaces and hyphens are real.
METADATA_COLUMNS: tuple[str, ...] = (
    "image_id", "center", "age", "gender",
    "hand", "ulna", "radius", "humerus", "foot", "tibia", "fibula", "femur", "hip bone",
    "ankle-joint", "knee-joint", "hip-joint", "wrist-joint", "elbow-joint", "shoulder-joint",
    "tumor", "benign", "malignant",
    "osteochondroma", "multiple osteochondromas", "simple bone cyst", "giant cell tumor",
    "osteofibroma", "synovial osteochondroma", "other bt", "osteosarcoma", "other mt",
    "upper limb", "lower limb", "pelvis",
    "frontal", "lateral", "oblique",
)  # fmt: skip

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)  # of each class


@dataclass(frozen=True)
class Sample:
    """One image of the dataset with its class, centre, annotation file and sheet row."""

    image_id: str
    image_path: Path
    label: str
    center: int | None  # BTXRD's centre; None for data in another layout
    annotation_path: Path | None
    metadata: Mapping[str, object] = field(hash=False)


def load_dataset(root: str | Path) -> list[Sample]:
    """Read the sheet, match every row to its image and annotation; sorted by ``image_id``."""
    root = find_root(Path(root))
    rows = read_rows(root)
    images = _index_files(find_dir(root, "images"), BTXRD_IMAGE_SUFFIXES)
    annotations_dir = find_dir(root, "annotations")
    annotations = _index_files(annotations_dir, (".json",)) if annotations_dir else {}
    samples: list[Sample] = []
    missing: list[str] = []
    for row in rows:
        image_id = str(row["image_id"]).strip()
        stem = Path(image_id).stem
        image_path = images.get(stem)
        if image_path is None:
            missing.append(image_id)
            continue
        samples.append(
            Sample(
                image_id=image_id,
                image_path=image_path,
                label=label_from_row(row),
                center=_to_int(row.get("center"), "center", image_id, root),
                annotation_path=annotations.get(stem),
                metadata=MappingProxyType(dict(row)),
            )
        )
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{root}: {len(missing)} image(s) listed in the sheet are not in images/ ({shown}); "
            "re-extract the archive or remove those rows."
        )
    return sorted(samples, key=lambda s: s.image_id)


def split_dataset(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> dict[str, list[Sample]]:
    """Split into train/val/test, stratified by class; the same seed gives the same split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    rng = np.random.default_rng(seed)
    split: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    # Sort first so the split depends on the samples, not on the order they were passed in.
    ordered = sorted(samples, key=lambda s: s.image_id)
    labels = sorted({s.label for s in ordered}, key=_class_order)
    for label in labels:
        group = [s for s in ordered if s.label == label]
        group = [group[i] for i in rng.permutation(len(group))]
        n_val = round(len(group) * fractions[1])
        n_test = round(len(group) * fractions[2])
        n_train = len(group) - n_val - n_test
        split["train"] += group[:n_train]
        split["val"] += group[n_train : n_train + n_val]
        split["test"] += group[n_train + n_val :]
    return {name: sorted(part, key=lambda s: s.image_id) for name, part in split.items()}


def write_split(path: str | Path, split: Mapping[str, Iterable[Sample | str]]) -> None:
    """Write ``{"train": [image_id, ...], "val": [...], "test": [...]}`` as JSON, atomically."""
    write_text(path, split_json(split))


def split_json(split: Mapping[str, Iterable[Sample | str]]) -> str:
    """The text ``write_split`` writes and ``read_split`` reads."""
    data = {
        name: [item.image_id if isinstance(item, Sample) else str(item) for item in split[name]]
        for name in SPLIT_NAMES
    }
    return json.dumps(data, indent=1) + "\n"


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split file written by ``write_split``: split name -> list of image ids."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read split file ({exc.strerror or exc}).") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: split file is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict) or any(
        not isinstance(data.get(name), list) or not all(isinstance(i, str) for i in data[name])
        for name in SPLIT_NAMES
    ):
        raise DatasetError(
            f"{path}: a split file needs lists of image ids under {', '.join(SPLIT_NAMES)}."
        )
    return {name: list(data[name]) for name in SPLIT_NAMES}


def _class_order(label: str) -> int:
    return BTXRD_CLASSES.index(label) if label in BTXRD_CLASSES else len(BTXRD_CLASSES)


def _to_int(value: object, column: str, image_id: str, root: Path) -> int:
    try:
        return int(float(str(value).strip()))
    except ValueError:
        raise DatasetError(
            f"{root}: '{column}' of {image_id} is {value!r}, expected a whole number."
        ) from None


def _index_files(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Stem -> file for the top level of ``folder`` only, so nested duplicates are ignored."""
    if folder is None:
        return {}
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if (
            path.is_file()
            and path.suffix.lower() in suffixes
            and not path.name.startswith(("~$", "."))
        ):
            index.setdefault(path.stem, path)
    return index
