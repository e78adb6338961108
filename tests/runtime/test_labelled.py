"""Labelled data in each layout (``btxrd.runtime.labels.folders``), without torch: what is read,
in the model's spelling, and every refusal as one line naming the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from btxrd.runtime.labels.folders import read_labelled
from btxrd.runtime.labels.sheet import DatasetError
from btxrd.runtime.labels.validation import read_labels, validate

CLASSES = ("Normal", "Benign", "Malignant")


def _image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10), value, dtype=np.uint8)).save(path)
    return path


def test_an_imagefolder_gives_each_image_its_folders_class_in_the_models_spelling(tmp_path):
    _image(tmp_path / "normal" / "a.png")
    _image(tmp_path / "BENIGN" / "nested" / "b.jpg")
    _image(tmp_path / "Malignant" / "c.png")
    _image(tmp_path / "Malignant" / ".hidden.png")
    (tmp_path / "Malignant" / "notes.txt").write_text("not an image")
    data = read_labelled(tmp_path, CLASSES)
    assert data.layout == "imagefolder"
    assert [(i.key, i.label) for i in data.images] == [
        ("BENIGN/nested/b.jpg", "Benign"),
        ("Malignant/c.png", "Malignant"),
        ("normal/a.png", "Normal"),
    ]
    assert data.images[0].path == tmp_path / "BENIGN" / "nested" / "b.jpg"


def test_a_csv_names_images_relative_to_its_own_folder(tmp_path):
    _image(tmp_path / "set" / "images" / "a.png")
    labels = tmp_path / "set" / "labels.csv"
    labels.write_text("image,label\nimages/a.png,malignant\n", encoding="utf-8")
    (image,) = read_labelled(labels, CLASSES).images
    assert image.path == tmp_path / "set" / "images" / "a.png" and image.label == "Malignant"


def test_a_btxrd_sheet_is_recognised_before_class_folders(tmp_path):
    _image(tmp_path / "images" / "IMG000001.jpg")
    header = "image_id,center,benign,malignant"
    (tmp_path / "dataset.csv").write_text(f"{header}\nIMG000001.jpeg,1,1,0\n", encoding="utf-8")
    data = read_labelled(tmp_path, CLASSES)
    assert data.layout == "btxrd"
    (image,) = data.images
    # The sheet says .jpeg of a .jpg file, as the real archive does: matched by stem.
    assert (image.key, image.label) == ("IMG000001.jpeg", "Benign")
    assert image.path == tmp_path / "images" / "IMG000001.jpg"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _image(d / "Normal" / "a.png") and (d / "Benign").mkdir(), "holds no images"),
        (
            lambda d: _image(d / "Normal" / "a.png") and _image(d / "Fracture" / "b.png"),
            "sub-folder(s) ['Fracture'] are not among the model's classes",
        ),
        (
            lambda d: _image(d / "Normal" / "a.png") and _image(d / "normal" / "b.png"),
            "both name the class 'Normal'",
        ),
        (lambda d: _image(d / "a.png"), "no labelled data found; btxrd reads a CSV"),
    ],
    ids=["empty-class-folder", "unknown-class-folder", "one-class-twice", "no-layout"],
)
def test_a_folder_that_cannot_be_read_as_labels_is_one_line(tmp_path, make, message):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    with pytest.raises(DatasetError) as caught:
        read_labelled(data, CLASSES)
    assert str(data) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_image_labelled_twice_two_ways_is_refused(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,Normal\na.png,Benign\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"a\.png is labelled both 'Normal' and 'Benign'"):
        read_labelled(labels, CLASSES)


def test_a_name_two_class_folders_share_is_matched_by_path_only(tmp_path):
    first = _image(tmp_path / "Normal" / "same.png")
    second = _image(tmp_path / "Benign" / "same.png")
    labels = read_labels(tmp_path, CLASSES)

    def record(path: Path | str, name: str = "same.png") -> dict:
        scores = dict(zip(CLASSES, (0.8, 0.1, 0.1), strict=True))
        return {"path": str(path), "image_name": name, "error": None, "scores": scores}

    figures = validate([record(first), record(second)], labels, CLASSES)
    assert figures["counts"] == {"scored": 2, "unlabelled": 0, "not_classified": 0}
    assert figures["accuracy"] == 0.5
    # A copy elsewhere cannot be told apart by its name: it is not guessed.
    elsewhere = validate([record(tmp_path / "copy" / "same.png")], labels, CLASSES)
    assert elsewhere["counts"]["unlabelled"] == 1
