"""The BTXRD loader: real-archive quirks, LabelMe pairing, the label rule, and splits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from btxrd.export.data.dataset import (
    BTXRD_CLASSES,
    METADATA_COLUMNS,
    DatasetError,
    Sample,
    label_from_row,
    load_dataset,
    read_annotation,
    read_split,
    split_dataset,
    write_split,
)
from btxrd.export.data.labelme import AnnotationError
from btxrd.runtime.errors import InputError
from btxrd.runtime.labels import sheet as btxrd_sheet


def _row(image_id: str, label: str, center: int = 1) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(METADATA_COLUMNS, 0)
    row.update(image_id=image_id, center=center, age=30, gender="F", femur=1, frontal=1)
    if label != "Normal":
        row.update(tumor=1, **{label.lower(): 1})
        row["osteosarcoma" if label == "Malignant" else "osteochondroma"] = 1
    return row


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _write_sheet(folder: Path, rows: list[dict[str, object]]) -> None:
    """dataset.xlsx where openpyxl is installed (the real format), else dataset.csv."""
    try:
        import openpyxl
    except ImportError:  # the runtime-only environment
        _write_csv(folder / "dataset.csv", rows)
        return
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(METADATA_COLUMNS))
    for row in rows:
        # Excel hands back floats for numbers typed by hand; the loader must not care.
        sheet.append(
            [float(row[c]) if isinstance(row[c], int) else row[c] for c in METADATA_COLUMNS]
        )
    workbook.save(folder / "dataset.xlsx")


def _labelme(width: int, height: int, shapes: list[dict[str, object]]) -> dict[str, object]:
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": "x.jpeg",
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }


def _shape(label: str, kind: str, points: list[list[float]]) -> dict[str, object]:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "description": "",
        "shape_type": kind,
        "flags": {},
        "mask": None,
    }


def _one_shape(label: str, kind: str, points: list[list[float]]) -> str:
    return json.dumps(_labelme(10, 10, [_shape(label, kind, points)]))


LESION = [
    _shape("osteosarcoma", "rectangle", [[40, 50], [10, 20]]),  # dragged from the far corner
    _shape("osteosarcoma", "polygon", [[12, 22], [38, 25], [30, 48]]),
]


@pytest.fixture
def real_layout(tmp_path: Path) -> Path:
    """A miniature of the real archive with all its quirks, under BTXRD_ROOT/BTXRD."""
    root = tmp_path / "BTXRD_ROOT" / "BTXRD"
    (root / "images").mkdir(parents=True)
    (root / "Annotations" / "Annotations").mkdir(parents=True)
    rows = [
        _row("IMG000001.jpeg", "Normal"),
        _row("IMG000002.jpeg", "Malignant", 2),
        _row("IMG000003.jpg", "Benign", 3),
    ]
    Image.new("L", (60, 70), 90).save(root / "images" / "IMG000001.jpeg")
    Image.new("RGB", (60, 70), (90, 90, 90)).save(root / "images" / "IMG000002.jpg")  # sheet: .jpeg
    Image.new("L", (60, 70), 90).save(root / "images" / "IMG000003.jpg")
    for stem in ("IMG000002", "IMG000003"):
        (root / "Annotations" / f"{stem}.json").write_text(json.dumps(_labelme(60, 70, LESION)))
        (root / "Annotations" / "Annotations" / f"{stem}.json").write_text("not json: a duplicate")
    (root / "Annotations" / "Annotations" / "IMG000001.json").write_text("{}")
    _write_sheet(root, rows)
    (root / "~$dataset(total).xlsx").write_bytes(b"\x00lock")
    return root


def test_loads_the_real_layout_with_its_quirks(real_layout: Path) -> None:
    for root in (real_layout, real_layout.parent):  # the inner folder or its parent
        samples = load_dataset(root)
        assert [s.image_id for s in samples] == [
            "IMG000001.jpeg",
            "IMG000002.jpeg",
            "IMG000003.jpg",
        ]
        assert [s.label for s in samples] == ["Normal", "Malignant", "Benign"]
        assert [s.center for s in samples] == [1, 2, 3]
        assert samples[1].image_path.name == "IMG000002.jpg"  # matched by stem
        assert samples[0].annotation_path is None  # the nested duplicate is not used
        assert samples[1].annotation_path == real_layout / "Annotations" / "IMG000002.json"
        assert samples[1].metadata["malignant"] == 1 and samples[1].metadata["gender"] == "F"


def test_lowercase_annotations_and_csv_fallback(
    real_layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (real_layout / "Annotations").rename(real_layout / "annotations")
    _write_csv(real_layout / "dataset.csv", [_row("IMG000002.jpeg", "Malignant", 2)])
    monkeypatch.setattr(
        btxrd_sheet, "has_openpyxl", lambda: False
    )  # as in the runtime-only install
    samples = load_dataset(real_layout)
    assert [s.image_id for s in samples] == ["IMG000002.jpeg"]
    assert samples[0].annotation_path == real_layout / "annotations" / "IMG000002.json"
    assert samples[0].center == 2 and samples[0].metadata["age"] == 30


def test_no_sheet_is_a_clear_error_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=str(tmp_path)) as info:
        load_dataset(tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)
    (tmp_path / "dataset.xlsx").write_bytes(b"x")
    monkeypatch.setattr(btxrd_sheet, "has_openpyxl", lambda: False)
    with pytest.raises(DatasetError, match="openpyxl"):
        load_dataset(tmp_path)


def test_missing_images_are_reported(real_layout: Path) -> None:
    (real_layout / "images" / "IMG000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"IMG000003\.jpg"):
        load_dataset(real_layout)


def test_loads_the_synthetic_generator_output(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl")
    from btxrd.export.synthetic.generate import SynthOptions, generate_dataset

    options = SynthOptions(n=12, seed=5, min_size=100, max_size=200, proportions=(1, 1, 1))
    generate_dataset(tmp_path, options, workers=1)
    samples = load_dataset(tmp_path)
    assert len(samples) == 12 and samples == sorted(samples, key=lambda s: s.image_id)
    assert Counter(s.label for s in samples) == {"Normal": 4, "Benign": 4, "Malignant": 4}
    for sample in samples:
        assert (sample.annotation_path is None) == (sample.label == "Normal")
        if sample.annotation_path:
            annotation = read_annotation(sample.annotation_path)
            with Image.open(sample.image_path) as image:
                assert image.size == (annotation.image_width, annotation.image_height)
            for lesion in annotation.lesions:
                assert lesion.polygon is not None and lesion.rectangle is not None
                assert lesion.mask_source == "polygon"
                x0, y0, x1, y1 = lesion.rectangle
                assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in lesion.polygon)


def test_rectangles_pair_with_the_polygon_inside_them(tmp_path: Path) -> None:
    shapes = [
        _shape("osteochondroma", "rectangle", [[100, 100], [60, 60]]),
        _shape("osteochondroma", "rectangle", [[0, 0], [30, 30]]),
        _shape("osteochondroma", "polygon", [[5, 5], [25, 6], [15, 28]]),
        _shape("osteochondroma", "polygon", [[65, 65], [95, 70], [80, 95]]),
        _shape("giant cell tumor", "polygon", [[140, 140], [150, 141], [145, 150]]),
        _shape("other bt", "rectangle", [[150, 10], [120, 40]]),
        _shape("osteochondroma", "line", [[1, 1], [2, 2]]),  # not a lesion shape: ignored
    ]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_labelme(200, 160, shapes)))
    annotation = read_annotation(path)
    assert (annotation.image_width, annotation.image_height) == (200, 160)
    first, second, only_box, only_outline = annotation.lesions
    assert first.rectangle == (60.0, 60.0, 100.0, 100.0) and first.polygon[0] == (65.0, 65.0)
    assert second.rectangle == (0.0, 0.0, 30.0, 30.0) and second.polygon[0] == (5.0, 5.0)
    assert only_box.label == "other bt" and only_box.polygon is None
    assert only_box.rectangle == (120.0, 10.0, 150.0, 40.0) and only_box.mask_source == "rectangle"
    assert only_outline.label == "giant cell tumor" and only_outline.rectangle is None


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"imageWidth": 10, "imageHeight": 10}), "shapes"),
        (json.dumps(_labelme(0, 10, [])), "imageWidth"),
        (_one_shape("x", "rectangle", [[1, 1]]), "2 corner points"),
        (_one_shape("x", "polygon", [[1, 1], [2, 2]]), "at least 3"),
        (_one_shape("x", "polygon", [[1, 1], [2], [3, 3]]), "bad point"),
        (_one_shape("", "polygon", [[1, 1], [2, 2], [3, 3]]), "no label"),
    ],
)  # fmt: skip
def test_malformed_annotation_names_the_file(tmp_path: Path, content: str, cause: str) -> None:
    path = tmp_path / "IMG000009.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=cause) as info:
        read_annotation(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("row", "label"),
    [
        ({"malignant": 1, "benign": 1}, "Malignant"),
        ({"malignant": 0, "benign": 1}, "Benign"),
        ({"malignant": "1", "benign": 0}, "Malignant"),
        ({"malignant": 0.0, "benign": 1.0}, "Benign"),
        ({"malignant": 0, "benign": 0, "tumor": 1}, "Normal"),
        ({}, "Normal"),
    ],
)  # fmt: skip
def test_label_rule(row: dict[str, object], label: str) -> None:
    assert label_from_row(row) == label


def _samples(counts: dict[str, int]) -> list[Sample]:
    out, k = [], 0
    for label, count in counts.items():
        for _ in range(count):
            k += 1
            out.append(Sample(f"IMG{k:06d}.jpeg", Path(f"IMG{k:06d}.jpeg"), label, 1, None, {}))
    return out


def test_split_is_deterministic_stratified_and_order_free() -> None:
    samples = _samples({"Normal": 50, "Benign": 41, "Malignant": 9})
    split = split_dataset(samples, seed=0)
    assert split == split_dataset(list(reversed(samples)), seed=0)
    assert split != split_dataset(samples, seed=1)
    ids = [s.image_id for part in split.values() for s in part]
    assert sorted(ids) == sorted(s.image_id for s in samples)
    for label, total in (("Normal", 50), ("Benign", 41), ("Malignant", 9)):
        for name, fraction in zip(("train", "val", "test"), (0.7, 0.15, 0.15), strict=True):
            got = sum(s.label == label for s in split[name])
            assert abs(got - total * fraction) <= 1, (label, name)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=3, max_size=3), st.integers(0, 2**31))
def test_split_is_a_partition(counts: list[int], seed: int) -> None:
    samples = _samples(dict(zip(BTXRD_CLASSES, counts, strict=True)))
    split = split_dataset(samples, seed=seed, fractions=(0.6, 0.2, 0.2))
    ids = [s.image_id for part in split.values() for s in part]
    assert len(ids) == len(set(ids)) == len(samples)


def test_split_round_trips_through_json(tmp_path: Path) -> None:
    split = split_dataset(_samples({"Normal": 7, "Benign": 5, "Malignant": 3}), seed=2)
    write_split(tmp_path / "split.json", split)
    assert read_split(tmp_path / "split.json") == {
        k: [s.image_id for s in v] for k, v in split.items()
    }


@pytest.mark.parametrize(
    "content", ["[]", '{"train": []}', '{"train": [1], "val": [], "test": []}', "{"]
)
def test_bad_split_file_is_an_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "split.json").write_text(content)
    with pytest.raises(DatasetError, match="split"):
        read_split(tmp_path / "split.json")


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_dataset([], fractions=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("package", ["btxrd.export.data", "btxrd.export.synthetic"])
def test_training_data_packages_are_torch_free(package: str) -> None:
    """Every module of the package, found by walking it, imports without torch or openpyxl
    (``dataset.xlsx`` support loads openpyxl only when a sheet is read)."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"package = importlib.import_module({package!r})\n"
        "for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        "heavy = {'torch', 'torchvision', 'onnx', 'cv2', 'pytorch_grad_cam', 'openpyxl'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
