"""Labelled images in the layouts engineers already keep them in, for ``btxrd-run --labels`` and
``btxrd-export --calibration-data``. The layout is told from what is there:

- ``csv``: a CSV file with a ``label`` column and an image column (``image``, ``image_id``,
  ``image_name`` or ``path``); image paths are relative to the CSV's folder.
- ``btxrd``: a BTXRD-layout folder, ``dataset.xlsx`` or ``dataset.csv`` (BTXRD's sheet, whose
  ``benign``/``malignant`` columns give the class) beside ``images/``, or one folder above it.
- ``imagefolder``: one sub-folder per class (torchvision's ImageFolder), named as the model's
  classes in any letter case; every image below a class folder has that class.

Labels are matched to the model's class names in any letter case and returned in the model's
spelling; anything the model does not know is refused with one line saying what was found.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from btxrd.runtime.decode.inputs import walk_folder
from btxrd.runtime.errors import InputError
from btxrd.runtime.labels.sheet import (
    BTXRD_IMAGE_SUFFIXES,
    DatasetError,
    find_dir,
    find_root,
    find_sheet,
    label_from_row,
)
from btxrd.runtime.labels.sheet import read_rows as read_sheet_rows

LAYOUTS = ("csv", "btxrd", "imagefolder")
IMAGE_COLUMNS = ("image", "image_id", "image_name", "path")


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image. ``key`` names it in split files and messages: the sheet's
    ``image_id``, the path relative to an ImageFolder, or the CSV's image cell."""

    key: str
    path: Path
    label: str


@dataclass(frozen=True)
class LabelledSet:
    """What ``read_labelled`` found: the layout and every labelled image, sorted by key."""

    source: Path
    layout: str
    images: tuple[LabelledImage, ...]


def read_labelled(source: Path, class_names: Sequence[str]) -> LabelledSet:
    """The labelled images of ``source`` (a CSV file or a folder in one of the layouts).

    ``DatasetError`` (an ``InputError``) naming ``source`` for anything unusable: no layout
    recognised, a class folder the model does not know, an empty class folder, a label not
    among ``class_names``, an image listed twice with two labels.
    """
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder; pass the labelled data")
    if source.is_file():
        images = _from_csv(source, class_names)
        layout = "csv"
    elif _is_btxrd(source):
        images = _from_btxrd(source, class_names)
        layout = "btxrd"
    else:
        images = _from_imagefolder(source, class_names)
        layout = "imagefolder"
    if not images:
        raise DatasetError(f"{source}: no labelled images found")
    return LabelledSet(source, layout, tuple(sorted(images, key=lambda image: image.key)))


def describe_layouts() -> str:
    """The accepted layouts in a few words, for messages and help texts."""
    return (
        "a CSV of image,label (paths relative to the CSV), a BTXRD-layout folder "
        "(dataset.xlsx or dataset.csv beside images/) or an ImageFolder (one sub-folder per class)"
    )


def _is_btxrd(folder: Path) -> bool:
    if find_sheet(folder) is not None:
        return True
    try:
        find_root(folder)
    except InputError:
        return False
    return True


def _canonical(class_names: Sequence[str]) -> dict[str, str]:
    return {name.casefold(): name for name in class_names}


def _label(text: str, class_names: Sequence[str], where: str) -> str:
    found = _canonical(class_names).get(text.strip().casefold())
    if found is None:
        raise DatasetError(
            f"{where}: label {text.strip()!r} is not among the model's classes "
            f"{list(class_names)}; fix the label or export the model with that class"
        )
    return found


def _from_csv(path: Path, class_names: Sequence[str]) -> list[LabelledImage]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the labels ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    columns = set(rows[0]) if rows else set()
    image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
    if image_column is None or "label" not in columns:
        raise DatasetError(
            f"{path}: needs a 'label' column and an image column (one of "
            f"{', '.join(IMAGE_COLUMNS)}); found {sorted(columns) or 'no rows'}"
        )
    images: dict[str, LabelledImage] = {}
    for number, row in enumerate(rows, start=2):
        key = (row[image_column] or "").strip()
        if not key:
            raise DatasetError(f"{path}: line {number} names no image")
        label = _label(row["label"] or "", class_names, f"{path}: line {number}")
        image = LabelledImage(key, path.parent / key, label)
        _add(images, image, path)
    return list(images.values())


def _from_btxrd(folder: Path, class_names: Sequence[str]) -> list[LabelledImage]:
    root = find_root(folder)
    rows = read_sheet_rows(root)
    images_dir = find_dir(root, "images") or root / "images"
    # The first file of a stem in name order wins (.jpeg before .jpg), as training's loader has it.
    by_stem = {
        p.stem: p
        for p in sorted(images_dir.iterdir() if images_dir.is_dir() else (), reverse=True)
        if p.is_file() and p.suffix.lower() in BTXRD_IMAGE_SUFFIXES
    }
    images: dict[str, LabelledImage] = {}
    for row in rows:
        key = str(row["image_id"]).strip()
        label = _label(label_from_row(row), class_names, f"{root}: {key}")
        _add(images, LabelledImage(key, by_stem.get(Path(key).stem, images_dir / key), label), root)
    return list(images.values())


def _from_imagefolder(folder: Path, class_names: Sequence[str]) -> list[LabelledImage]:
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise DatasetError(f"{folder}: no labelled data found; btxrd reads {describe_layouts()}")
    canonical = _canonical(class_names)
    unknown = [p.name for p in subfolders if p.name.casefold() not in canonical]
    if unknown:
        raise DatasetError(
            f"{folder}: sub-folder(s) {unknown} are not among the model's classes "
            f"{list(class_names)} (found {[p.name for p in subfolders]}); an ImageFolder has one "
            "sub-folder per class, named as the class"
        )
    seen: dict[str, Path] = {}
    for sub in subfolders:
        name = canonical[sub.name.casefold()]
        if name in seen:
            raise DatasetError(
                f"{folder}: {seen[name].name}/ and {sub.name}/ both name the class {name!r}"
            )
        seen[name] = sub
    images: dict[str, LabelledImage] = {}
    for sub in subfolders:
        listing = walk_folder(sub, recursive=True)
        if listing.problems:
            raise DatasetError(listing.problems[0][1])
        if not listing.paths:
            raise DatasetError(
                f"{sub}: this class folder holds no images; add its images or remove it"
            )
        label = canonical[sub.name.casefold()]
        for path in listing.paths:
            _add(images, LabelledImage(path.relative_to(folder).as_posix(), path, label), folder)
    return list(images.values())


def _add(images: dict[str, LabelledImage], image: LabelledImage, source: Path) -> None:
    known = images.get(image.key)
    if known is not None and known.label != image.label:
        raise DatasetError(
            f"{source}: {image.key} is labelled both {known.label!r} and {image.label!r}"
        )
    images[image.key] = image
