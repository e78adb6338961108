"""``btxrd-export --calibration-data`` on data in the layouts engineers keep it in (ImageFolder,
CSV), and ``btxrd-run --labels`` on the same data printing the figures export reported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from btxrd.export.cli import main as export_main
from btxrd.runtime.cli.run import main as run_main

PER_CLASS = 40  # 6 of each class in val: enough for --min-val-per-class 5
MIN_VAL = ["--min-val-per-class", "5"]
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


@pytest.fixture(scope="module")
def draw(make_radiograph):
    def draw(path: Path, seed: int, label_index: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Classes differ in size, so even a random network's features tell them apart a little.
        width = 56 + 12 * label_index
        Image.fromarray(make_radiograph(width, 72, seed=seed)).save(path)

    return draw


@pytest.fixture(scope="module")
def image_folder(draw, tmp_path_factory) -> Path:
    """An ImageFolder whose sub-folders spell the classes in other letter cases."""
    root = tmp_path_factory.mktemp("own") / "my-data"
    for index, folder in enumerate(("normal", "Benign", "MALIGNANT")):
        for i in range(PER_CLASS):
            draw(root / folder / f"{folder.lower()}_{i:03d}.png", 100 * index + i, index)
    return root


@pytest.fixture(scope="module")
def csv_data(draw, tmp_path_factory) -> Path:
    """A CSV image,label beside an images/ folder, paths relative to the CSV."""
    root = tmp_path_factory.mktemp("own-csv")
    rows = ["image,label"]
    for index, label in enumerate(("Normal", "benign", "Malignant")):
        for i in range(PER_CLASS):
            name = f"images/{label.lower()}_{i:03d}.png"
            draw(root / name, 1000 + 100 * index + i, index)
            rows.append(f"{name},{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root / "labels.csv"


def _export(checkpoint: Path, out: Path, radiographs: Path, *args: object):
    argv = [checkpoint, "-o", out, "--parity-images", radiographs, *args]
    return CliRunner().invoke(export_main, [str(a) for a in argv], env=CLEAN_ENV)


def _run(*args: object):
    return CliRunner().invoke(run_main, [str(a) for a in args], env=CLEAN_ENV)


def _accuracy_line(text: str) -> str:
    (line,) = [line.strip() for line in text.splitlines() if re.search(r"\baccuracy \d", line)]
    return line[line.index("accuracy") :]


@pytest.fixture(scope="module")
def from_imagefolder(tiny_checkpoint, radiograph_dir, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "mine.onnx"
    result = _export(
        tiny_checkpoint, out, radiograph_dir, "--calibration-data", str(image_folder), *MIN_VAL
    )
    assert result.exit_code == 0, result.stderr
    return out, result


def test_imagefolder_export_carries_calibration_and_the_gate(from_imagefolder) -> None:
    out, result = from_imagefolder
    assert "imagefolder, 120 images" in result.stderr
    info = _run("--model", out, "--info", "--json")
    assert info.exit_code == 0, info.stderr
    trust = json.loads(info.stdout)["trust"]
    assert trust["calibration"]["temperature"] > 0
    assert trust["ood_gate"]["method"] == "mahalanobis_multilayer"
    assert trust["ood_gate"]["fitted_on"]["data"] == "my-data"


def test_imagefolder_split_is_written_beside_the_model_and_reproduces_the_fit(
    from_imagefolder, tiny_checkpoint, radiograph_dir, image_folder, tmp_path
) -> None:
    out, _ = from_imagefolder
    split = json.loads(out.with_suffix(".split.json").read_text())
    assert sum(map(len, split.values())) == 3 * PER_CLASS
    assert "Benign/benign_000.png" in {key for part in split.values() for key in part}
    # Stratified: each class has its share of val.
    assert sum(key.startswith("MALIGNANT/") for key in split["val"]) == 6
    again = tmp_path / "again.onnx"
    args = ["--calibration-data", str(image_folder), "--split", str(out.with_suffix(".split.json"))]
    result = _export(tiny_checkpoint, again, radiograph_dir, *args, *MIN_VAL)
    assert result.exit_code == 0, result.stderr
    assert not again.with_suffix(".split.json").exists()  # a given split is not written again
    temperatures = [
        json.loads(_run("--model", m, "--info", "--json").stdout)["trust"]["calibration"]
        for m in (out, again)
    ]
    assert temperatures[0]["temperature"] == temperatures[1]["temperature"]


def test_btxrd_run_labels_on_the_imagefolder_prints_exports_figures(
    from_imagefolder, image_folder
) -> None:
    out, exported = from_imagefolder
    checked = _run("--model", out, "--dir", image_folder, "--recursive", "--labels", image_folder)
    assert checked.exit_code in (0, 1), checked.stderr  # 1: the gate refused some
    assert _accuracy_line(checked.stdout) == _accuracy_line(exported.stderr)
    report = json.loads(out.with_suffix(".parity.json").read_text())["labelled_data"]
    assert report["layout"] == "imagefolder" and report["num_images"] == 3 * PER_CLASS
    scored = report["figures"]["counts"]["scored"]
    assert f"validation: {scored} labelled images scored" in checked.stdout


def test_csv_export_and_btxrd_run_labels_agree(
    tiny_checkpoint, radiograph_dir, csv_data, tmp_path
) -> None:
    out = tmp_path / "from-csv.onnx"
    result = _export(tiny_checkpoint, out, radiograph_dir, "--calibration-data", csv_data, *MIN_VAL)
    assert result.exit_code == 0, result.stderr
    assert "csv, 120 images" in result.stderr
    info = json.loads(_run("--model", out, "--info", "--json").stdout)
    assert info["trust"]["calibration"]["fitted_on"]["data"] == "labels.csv"
    split = json.loads(out.with_suffix(".split.json").read_text())
    assert "images/benign_000.png" in {key for part in split.values() for key in part}
    checked = _run("--model", out, "--dir", csv_data.parent / "images", "--labels", csv_data)
    assert checked.exit_code in (0, 1), checked.stderr
    assert _accuracy_line(checked.stdout) == _accuracy_line(result.stderr)


# --- refusals: one line naming the data, exit 1, no model written ------------------------------


def _refused(checkpoint: Path, radiographs: Path, data: Path, tmp_path: Path, *args: str) -> str:
    out = tmp_path / "refused.onnx"
    result = _export(checkpoint, out, radiographs, "--calibration-data", str(data), *args)
    assert result.exit_code == 1, result.stderr
    assert not out.exists() and not out.with_suffix(".split.json").exists()
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert "Traceback" not in result.stderr
    return line


def test_an_empty_class_folder_is_refused(draw, tiny_checkpoint, radiograph_dir, tmp_path) -> None:
    data = tmp_path / "data"
    draw(data / "Normal" / "a.png", 1, 0)
    draw(data / "Benign" / "b.png", 2, 1)
    (data / "Malignant").mkdir()
    line = _refused(tiny_checkpoint, radiograph_dir, data, tmp_path)
    assert f"{data / 'Malignant'}: this class folder holds no images" in line


def test_an_unknown_class_folder_is_refused_listing_what_was_found(
    draw, tiny_checkpoint, radiograph_dir, tmp_path
) -> None:
    data = tmp_path / "data"
    for index, name in enumerate(("Normal", "Benign", "Osteosarcoma")):
        draw(data / name / "a.png", index, index)
    line = _refused(tiny_checkpoint, radiograph_dir, data, tmp_path)
    assert "sub-folder(s) ['Osteosarcoma'] are not among the model's classes" in line
    assert "found ['Benign', 'Normal', 'Osteosarcoma']" in line


def test_a_csv_label_the_model_does_not_know_is_refused(
    draw, tiny_checkpoint, radiograph_dir, tmp_path
) -> None:
    draw(tmp_path / "a.png", 1, 0)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,Osteosarcoma\n", encoding="utf-8")
    line = _refused(tiny_checkpoint, radiograph_dir, labels, tmp_path)
    assert f"{labels}: line 2: label 'Osteosarcoma' is not among the model's classes" in line


def test_a_csv_row_whose_image_is_missing_is_refused(
    tiny_checkpoint, radiograph_dir, tmp_path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\nnowhere/a.png,Normal\n", encoding="utf-8")
    line = _refused(tiny_checkpoint, radiograph_dir, labels, tmp_path)
    assert "not there (first: nowhere/a.png" in line and "relative to the CSV's folder" in line


def test_too_few_images_per_class_is_refused_by_default(
    tiny_checkpoint, radiograph_dir, image_folder, tmp_path
) -> None:
    line = _refused(tiny_checkpoint, radiograph_dir, image_folder, tmp_path)
    assert "too few images for a trustworthy calibration and gate" in line
    assert "6 Normal, 6 Benign, 6 Malignant" in line and "at least 30" in line
