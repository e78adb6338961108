"""The synthetic BTXRD generator: layout, determinism, LabelMe schema, sheet, and the lesions."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from schema_check import assert_valid
from terminal import through_a_terminal

import btxrd.export.synthetic.generate as generate_module
from btxrd.export.data.dataset import METADATA_COLUMNS, label_from_row
from btxrd.export.synthetic.cases import assign_labels, image_rng, plan_case
from btxrd.export.synthetic.cli import main
from btxrd.export.synthetic.generate import SynthOptions, generate_dataset, render_image
from btxrd.export.synthetic.lesions import BENIGN_SUBTYPES, MALIGNANT_SUBTYPES

SUBTYPES = set(BENIGN_SUBTYPES) | set(MALIGNANT_SUBTYPES)
OPTIONS = SynthOptions(n=30, seed=3, min_size=120, max_size=320, proportions=(0.34, 0.33, 0.33))

openpyxl = pytest.importorskip("openpyxl")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _bounds(points: list[list[float]]) -> tuple[float, float, float, float]:
    xs, ys = zip(*points, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _area(points: list[list[float]]) -> float:
    """Shoelace formula: a polygon squashed onto the image border has no area."""
    xs, ys = np.array(points).T
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "dataset.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "BTXRD"
    generate_dataset(out, OPTIONS, workers=1)
    return out


def test_same_seed_gives_same_bytes_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path / "again", OPTIONS, workers=2)
    assert _files(tmp_path / "again") == _files(dataset)


def test_different_seed_gives_different_images(dataset: Path, tmp_path: Path) -> None:
    other = SynthOptions(n=4, seed=4, min_size=120, max_size=320, proportions=OPTIONS.proportions)
    generate_dataset(tmp_path / "other", other, workers=1)
    ours = {p.stem: p.read_bytes() for p in (dataset / "images").iterdir()}
    theirs = {p.stem: p.read_bytes() for p in (tmp_path / "other" / "images").iterdir()}
    assert all(ours[stem] != data for stem, data in theirs.items())


def test_layout_matches_the_real_archive(dataset: Path) -> None:
    assert {p.name for p in dataset.iterdir()} == {
        "images", "Annotations", "dataset.xlsx", "dataset.csv", "generation.json",
    }  # fmt: skip
    names = sorted(p.name for p in (dataset / "images").iterdir())
    assert [Path(n).stem for n in names] == [f"IMG{i:06d}" for i in range(1, OPTIONS.n + 1)]
    assert {Path(n).suffix for n in names} <= {".jpeg", ".jpg"}


def test_some_files_end_in_jpg_like_the_real_archive() -> None:
    names = [plan_case(i, "Normal", 300, 600, image_rng(0, i)).file_name for i in range(400)]
    jpg = sum(n.endswith(".jpg") for n in names)
    assert 1 <= jpg <= 25


def test_sheet_has_the_37_columns_in_order_in_xlsx_and_csv(dataset: Path) -> None:
    workbook = openpyxl.load_workbook(dataset / "dataset.xlsx", read_only=True)
    table = [list(r) for r in workbook.worksheets[0].iter_rows(values_only=True)]
    workbook.close()
    with (dataset / "dataset.csv").open(newline="") as handle:
        csv_table = list(csv.reader(handle))
    assert len(METADATA_COLUMNS) == 37
    assert tuple(table[0]) == METADATA_COLUMNS == tuple(csv_table[0])
    assert len(table) == len(csv_table) == OPTIONS.n + 1
    assert [[str(v) for v in row] for row in table[1:]] == csv_table[1:]


def test_rows_are_consistent_flags(dataset: Path) -> None:
    for row in _rows(dataset):
        flags = {k: int(v) for k, v in row.items() if k not in ("image_id", "gender")}
        assert row["gender"] in ("M", "F")
        assert (dataset / "images" / row["image_id"]).is_file()
        assert flags["center"] in (1, 2, 3)
        assert set(flags.values()) - {flags["center"], flags["age"]} <= {0, 1}
        assert flags["frontal"] + flags["lateral"] + flags["oblique"] == 1
        assert flags["tumor"] == flags["benign"] + flags["malignant"]
        assert sum(flags[s] for s in SUBTYPES) == flags["tumor"]
        if flags["malignant"]:
            assert flags["osteosarcoma"] + flags["other mt"] == 1
        bones = (
            "hand",
            "ulna",
            "radius",
            "humerus",
            "foot",
            "tibia",
            "fibula",
            "femur",
            "hip bone",
        )
        assert any(flags[b] for b in bones)
        for region, members in (
            ("upper limb", ("hand", "ulna", "radius", "humerus")),
            ("lower limb", ("foot", "tibia", "fibula", "femur")),
            ("pelvis", ("hip bone",)),
        ):
            if any(flags[m] for m in members):
                assert flags[region] == 1, (row["image_id"], region)


def test_class_counts_follow_the_proportions_exactly() -> None:
    labels = assign_labels(3746, (1879, 1525, 342), seed=0)
    assert [labels.count(c) for c in ("Normal", "Benign", "Malignant")] == [1879, 1525, 342]
    assert assign_labels(50, (0.5, 0.41, 0.09), 1) == assign_labels(50, (0.5, 0.41, 0.09), 1)


def test_normal_images_have_no_annotation_and_tumours_have_one(dataset: Path) -> None:
    labels = {r["image_id"]: label_from_row(r) for r in _rows(dataset)}
    assert set(labels.values()) == {"Normal", "Benign", "Malignant"}
    for image_id, label in labels.items():
        annotation = dataset / "Annotations" / f"{Path(image_id).stem}.json"
        assert annotation.exists() == (label != "Normal"), image_id


def test_labelme_schema_and_geometry(dataset: Path) -> None:
    files = sorted((dataset / "Annotations").iterdir())
    assert files
    for path in files:
        doc = json.loads(path.read_text())
        assert_valid(doc, "labelme_annotation")
        assert set(doc) == {
            "version",
            "flags",
            "shapes",
            "imagePath",
            "imageData",
            "imageHeight",
            "imageWidth",
        }
        assert doc["version"] == "5.4.1" and doc["imageData"] is None and doc["flags"] == {}
        image_path = dataset / "images" / doc["imagePath"]
        with Image.open(image_path) as image:
            assert image.size == (doc["imageWidth"], doc["imageHeight"])
        w, h = doc["imageWidth"], doc["imageHeight"]
        rects, polys = [], []
        for shape in doc["shapes"]:
            assert set(shape) == {
                "label",
                "points",
                "group_id",
                "description",
                "shape_type",
                "flags",
                "mask",
            }
            assert shape["label"] in SUBTYPES
            assert shape["group_id"] is None and shape["mask"] is None
            assert shape["description"] == "" and shape["flags"] == {}
            assert all(0 <= x <= w and 0 <= y <= h for x, y in shape["points"])
            if shape["shape_type"] == "rectangle":
                assert len(shape["points"]) == 2
                rects.append(shape)
            else:
                assert shape["shape_type"] == "polygon" and len(shape["points"]) >= 3
                assert _area(shape["points"]) > 16, f"{path.name}: degenerate polygon"
                polys.append(shape)
        assert len(rects) == len(polys) >= 1
        boxes = [(r["label"], *_bounds(r["points"])) for r in rects]
        for poly in polys:
            px0, py0, px1, py1 = _bounds(poly["points"])
            assert any(
                label == poly["label"] and x0 <= px0 and px1 <= x1 and y0 <= py0 and py1 <= y1
                for label, x0, y0, x1, y1 in boxes
            )


def test_sizes_modes_and_quality_vary_within_range(dataset: Path) -> None:
    modes, aspects = set(), []
    for path in (dataset / "images").iterdir():
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert OPTIONS.min_size <= max(image.size) <= OPTIONS.max_size
            modes.add(image.mode)
            aspects.append(image.size[0] / image.size[1])
    assert modes == {"L", "RGB"}
    assert min(aspects) < 0.8 and max(aspects) > 1.0  # portrait and landscape both occur


def test_generation_json_records_provenance(dataset: Path) -> None:
    record = json.loads((dataset / "generation.json").read_text())
    assert_valid(record, "synthetic_generation")
    assert record["generator"] == "btxrd-synth" and record["version"]
    assert record["options"]["seed"] == OPTIONS.seed and record["options"]["n"] == OPTIONS.n
    assert sum(record["counts"].values()) == OPTIONS.n
    assert "workers" not in record["options"]  # the output does not depend on them


@pytest.mark.parametrize("index", range(6))
def test_polygon_traces_the_lesion_that_was_drawn(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Render the same case with and without its lesion: the change must sit inside the box."""
    label = "Malignant" if index % 2 else "Benign"
    options = SynthOptions(n=6, seed=11, min_size=300, max_size=400)
    with_lesion = render_image(index, label, options)
    real_plan = generate_module.plan_lesions

    class _Inert:
        def __init__(self, lesion: object) -> None:
            self.lesion, self.label, self.bone = lesion, lesion.label, lesion.bone

        def modify(self, patch: object, density: np.ndarray) -> np.ndarray:
            return density

        def draw(self, canvas: object, texture: object) -> None:
            pass

        def outline(self) -> object:
            return self.lesion.outline()

    monkeypatch.setattr(
        generate_module, "plan_lesions", lambda *a, **k: [_Inert(x) for x in real_plan(*a, **k)]
    )
    without = render_image(index, label, options)
    a = np.asarray(Image.open(io.BytesIO(with_lesion.jpeg)).convert("L"), dtype=np.float32)
    b = np.asarray(Image.open(io.BytesIO(without.jpeg)).convert("L"), dtype=np.float32)
    diff = np.abs(a - b)
    diff[diff < 4] = 0  # JPEG ringing
    inside = np.zeros_like(diff, dtype=bool)
    doc = json.loads(with_lesion.annotation)
    for shape in doc["shapes"]:
        if shape["shape_type"] == "rectangle":
            (x0, y0), (x1, y1) = shape["points"]
            pad = 0.1 * max(abs(x1 - x0), abs(y1 - y0)) + 4
            inside[
                int(max(0, min(y0, y1) - pad)) : int(max(y0, y1) + pad) + 1,
                int(max(0, min(x0, x1) - pad)) : int(max(x0, x1) + pad) + 1,
            ] = True
    assert diff.sum() > 0, "the lesion changed nothing"
    assert diff[inside].sum() / diff.sum() > 0.9


def test_cli_writes_a_dataset_and_reports_json(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        ["--out", str(out), "--n", "5", "--max-size", "200", "--min-size", "100", "--workers", "1"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert_valid(summary, "synth_summary")
    assert summary["options"]["n"] == 5 and sum(summary["counts"].values()) == 5
    assert_valid(json.loads((out / "generation.json").read_text()), "synthetic_generation")
    assert result.stderr == ""  # no bar: stderr is not a terminal (test_progress_bar_on_a_terminal)
    assert len(list((out / "images").iterdir())) == 5


def test_cli_refuses_to_mix_with_a_previous_run(tmp_path: Path) -> None:
    args = [
        "--out",
        str(tmp_path),
        "--n",
        "2",
        "--max-size",
        "150",
        "--min-size",
        "100",
        "--workers",
        "1",
    ]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    # An output that cannot be used is exit 3 in every command: nothing is written.
    assert again.exit_code == 3 and "--overwrite" in again.stderr and again.stdout == ""
    assert len(again.stderr.splitlines()) == 1
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [["--min-size", "500", "--max-size", "400"], ["--proportions", "1,2"], ["--n", "0"],
     ["--proportions", "a,b,c"]],
)  # fmt: skip
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert not (tmp_path / "x" / "images").exists()


def _synth_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "btxrd-synth"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Background shells start jobs with SIGINT ignored; give the child Ctrl-C's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_first_image(folder: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the generator has written an image (it is then past its set-up)."""
    deadline = time.monotonic() + timeout
    while not (folder.is_dir() and any(folder.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no image written"
        time.sleep(0.05)


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr shows tqdm's bar (count, rate); stdout stays the JSON summary."""
    code, stdout, screen = through_a_terminal(
        [str(Path(sys.executable).parent / "btxrd-synth"), "--out", str(tmp_path), "--n", "4",
         "--max-size", "150", "--min-size", "100", "--workers", "1"],
    )  # fmt: skip
    assert code == 0, screen
    assert "generating" in screen and "/4 [" in screen
    assert "image/s" in screen or "s/image" in screen  # the rate, whichever way tqdm puts it
    assert json.loads(stdout)["workers"] == 1


def test_worker_pool_ends_quietly(tmp_path: Path) -> None:
    """The pool terminates its workers with SIGTERM, which the command turns into an interrupt;
    the workers reset it, so stderr stays empty (no bar either: stderr is not a terminal)."""
    process = _synth_process(
        "--out", str(tmp_path), "--n", "6", "--max-size", "150", "--min-size", "100",
        "--workers", "2",
    )  # fmt: skip
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["workers"] == 2
    assert stderr == ""


def test_ctrl_c_exits_130_and_says_the_folder_is_incomplete(tmp_path: Path) -> None:
    process = _synth_process(
        "--out", str(tmp_path), "--n", "2000", "--max-size", "400", "--workers", "2",
    )  # fmt: skip
    _wait_for_first_image(tmp_path / "images", process)  # generation is under way
    process.send_signal(signal.SIGINT)  # to the command only; its workers ignore Ctrl-C
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-2:] == [
        f"btxrd-synth: {tmp_path} is incomplete; rerun with --overwrite",
        "btxrd-synth: interrupted",
    ]
