"""``btxrd-run --labels``: a torch-free check of a model on labelled images, with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from btxrd.runtime.cli.run import main

CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


@pytest.fixture
def labelled(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,label"]
    for i in range(12):
        Image.fromarray(rng.integers(20 + 10 * i, 120 + 10 * i, (96, 80), dtype=np.uint8)).save(
            folder / f"x{i:02d}.png"
        )
        rows.append(f"x{i:02d}.png,{('Normal', 'Benign', 'Malignant')[i % 3]}")
    (folder / "unlabelled.png").write_bytes((folder / "x00.png").read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder, labels


def test_labels_give_figures_with_intervals(tiny_onnx, labelled, tmp_path):
    folder, labels = labelled
    out = tmp_path / "validation.json"
    result = run("--model", tiny_onnx, "--dir", folder, "--labels", labels, "--metrics-out", out)
    assert result.exit_code == 0, result.stderr
    assert "validation: 12 labelled images scored, 0 not classified, 1 without a label" in (
        result.stdout
    )
    assert "confusion matrix" in result.stdout
    figures = json.loads(out.read_text())
    assert sum(map(sum, figures["confusion_matrix"])) == 12
    low, high = figures["intervals"]["accuracy"]
    assert low <= figures["accuracy"] <= high
    assert 0.0 <= figures["ece"] <= 1.0 and set(figures["recall"]) == {
        "Normal",
        "Benign",
        "Malignant",
    }


def test_with_json_the_figures_go_into_the_document_and_stdout_stays_json(tiny_onnx, labelled):
    folder, labels = labelled
    result = run("--model", tiny_onnx, "--dir", folder, "--labels", labels, "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)  # nothing but the document on stdout
    assert document["summary"]["validation"]["counts"]["scored"] == 12
    assert "validation:" in result.stderr


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("image,label\nx00.png,Osteosarcoma\n", "not among the model's classes"),
        ("file,class\nx00.png,Normal\n", "needs a 'label' column"),
    ],
    ids=["unknown-label", "wrong-columns"],
)
def test_a_bad_labels_file_is_a_usage_error(tiny_onnx, labelled, tmp_path, content, cause):
    folder, _ = labelled
    labels = tmp_path / "bad.csv"
    labels.write_text(content, encoding="utf-8")
    result = run("--model", tiny_onnx, "--dir", folder, "--labels", labels)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(labels) in line and cause in line


def test_metrics_out_needs_labels(tiny_onnx, labelled, tmp_path):
    result = run("--model", tiny_onnx, "--dir", labelled[0], "--metrics-out", tmp_path / "m.json")
    assert result.exit_code == 2 and "--metrics-out needs --labels" in result.stderr


def _btxrd_folder(root: Path, folder: Path, labels: Path) -> Path:
    """A BTXRD-layout copy of ``labelled``: images/ as .jpg, and a dataset.csv sheet whose
    image_id says .jpeg (as some rows of the real sheet do) and whose class is in BTXRD's
    benign/malignant columns."""
    (root / "images").mkdir(parents=True)
    rows = ["image_id,center,tumor,benign,malignant"]
    for line in labels.read_text().splitlines()[1:]:
        name, label = line.split(",")
        stem = Path(name).stem
        Image.open(folder / name).convert("RGB").save(root / "images" / f"{stem}.jpg")
        flags = {"Normal": "0,0,0", "Benign": "1,1,0", "Malignant": "1,0,1"}[label]
        rows.append(f"{stem}.jpeg,1,{flags}")
    (root / "dataset.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_a_btxrd_folder_gives_the_labels_of_its_sheet(tiny_onnx, labelled, tmp_path):
    root = _btxrd_folder(tmp_path / "BTXRD", *labelled)
    labels_csv = tmp_path / "labels.csv"  # the same labels, spelled as a CSV of the .jpg files
    labels_csv.write_text(
        "image,label\n"
        + "".join(
            f"{Path(n).stem}.jpg,{lab}\n"
            for n, lab in (r.split(",") for r in labelled[1].read_text().splitlines()[1:])
        )
    )
    from_folder = run("--model", tiny_onnx, "--dir", root / "images", "--labels", root, "--json")
    from_csv = run("--model", tiny_onnx, "--dir", root / "images", "--labels", labels_csv, "--json")
    assert from_folder.exit_code == from_csv.exit_code == 0, from_folder.stderr
    folder_figures = json.loads(from_folder.stdout)["summary"]["validation"]
    assert folder_figures["counts"] == {"scored": 12, "unlabelled": 0, "not_classified": 0}
    assert folder_figures == json.loads(from_csv.stdout)["summary"]["validation"]


def test_a_folder_in_no_known_layout_is_a_usage_error(tiny_onnx, labelled, tmp_path):
    # Images, but neither a sheet nor class sub-folders.
    folder, _ = labelled
    result = run("--model", tiny_onnx, "--dir", folder, "--labels", folder)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"{folder}: no labelled data found; btxrd reads a CSV of image,label" in result.stderr
    assert "BTXRD-layout folder" in result.stderr and "ImageFolder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
