"""``btxrd-explain`` end to end on a small synthetic BTXRD folder with a tiny checkpoint: exit
codes, stdout and stderr apart, and the files each command writes."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from schema_check import assert_valid

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from btxrd.explain.cli import main
from btxrd.export.data.dataset import load_dataset, split_dataset, write_split
from btxrd.runtime.decode.image import load_image

pytestmark = [pytest.mark.torch, pytest.mark.slow]
CLASSES = ("Normal", "Benign", "Malignant")


def _run(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_images_default_command_writes_overlays(synth_data, tiny_checkpoint, tmp_path) -> None:
    images = sorted((synth_data / "images").iterdir())[:6]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    out = tmp_path / "overlays"
    # No "images" subcommand: a path as first argument goes to the default command.
    result = _run([*images, broken, "--checkpoint", tiny_checkpoint, "--out", out])
    assert result.exit_code == 1, result.stderr  # one input failed, the others are done
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(images) + 1
    assert lines[-1] == f"{broken}  failed"
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert any("broken.png" in e for e in errors)
    written = 0
    for image, line in zip(images, lines, strict=False):
        assert line.startswith(str(image))
        for name in CLASSES:
            assert re.search(rf"{name} \d\.\d{{3}}", line)
        overlay = out / f"{image.stem}_gradcam.png"
        if line.endswith(str(overlay)):
            with Image.open(overlay) as png:
                assert png.mode == "RGB" and png.format == "PNG"
                width, height = load_image(image).image.size
                assert png.width == width and png.height > height  # caption band below
                assert png.text["btxrd.class"] in CLASSES and "btxrd.checkpoint_sha256" in png.text
            written += 1
        else:  # a degenerate CAM: reported, never saved
            assert line.endswith("  -") and not overlay.exists()
            assert any(str(image) in e and "flat" in e for e in errors)
    assert written >= 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_images_json_and_class(synth_data, tiny_checkpoint, tmp_path) -> None:
    image = sorted((synth_data / "images").iterdir())[0]
    result = _run(
        [
            *("images", image, "--checkpoint", tiny_checkpoint, "--out", tmp_path, "--json"),
            *("--class", "Malignant", "--method", "gradcam++", "-q"),
        ]
    )
    assert result.stderr == "" or "error" in result.stderr
    document = json.loads(result.stdout)
    assert document["schema_version"] == 3 and document["model"]["method"] == "gradcam++"
    (record,) = document["results"]
    assert record["path"] == str(image) and record["image_name"] == image.name
    assert record["cam_class"] == "Malignant" and record["error"] is None
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["prediction"] == max(record["scores"], key=record["scores"].get)
    assert record["confidence"] == record["scores"][record["prediction"]]


def test_images_on_a_given_target_layer(synth_data, tiny_checkpoint, tmp_path) -> None:
    image = sorted((synth_data / "images").iterdir())[0]
    argv = ["images", image, "--checkpoint", tiny_checkpoint, "--out", tmp_path, "--json", "-q"]
    result = _run([*argv, "--target-layer", "layer3"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"]["target_layer"] == "layer3"
    assert document["model"]["cam_grid"] == [4, 4]  # layer3 of a resnet at 64 px: stride 16
    assert document["results"][0]["overlay"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--target-layer", "layer9"], 3, "--target-layer 'layer9' is not a module"),
        (["--class", "Osteoma"], 2, "not one of"),
        (["--method", "scorecam"], 2, "scorecam"),
        (["--checkpoint", "missing.pt"], 3, "checkpoint not found"),
    ],
    ids=["unknown-target-layer", "unknown-class", "unknown-method", "missing-checkpoint"],
)
def test_images_usage_and_model_errors(synth_data, tiny_checkpoint, tmp_path, extra, code, message):
    image = sorted((synth_data / "images").iterdir())[0]
    args = ["images", image, "--checkpoint", tiny_checkpoint, "--out", tmp_path]
    result = _run(args + extra)
    assert result.exit_code == code
    assert message in result.stderr and result.stdout == ""
    assert not list(tmp_path.glob("*.png"))


def test_images_needs_an_image() -> None:
    assert _run(["images"]).exit_code == 2


@pytest.mark.parametrize("command", [[], ["images"], ["gallery"], ["annotations"], ["report"]])
def test_every_command_has_an_example(command) -> None:
    result = _run([*command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


def test_report_writes_everything(report_run) -> None:
    assert report_run.exit_code == 0, report_run.stderr
    summary = json.loads(report_run.stdout)
    assert_valid(summary, "explain_summary")
    assert {"accuracy", "scored", "report"} <= set(summary)
    out = report_run.out
    # The fixture is seeded and always gives scored tumour images (4 of 6 when this was written).
    assert summary["scored"] >= 1
    expected = {f"gallery_{c}.png" for c in CLASSES} | {
        "metrics.json",
        "annotation_report.json",
        "report.html",
        "annotation_comparison.png",
    }
    assert {Path(f).name for f in summary["files"]} == expected
    assert {p.name for p in out.iterdir()} == expected
    assert summary["report"] == str(out / "report.html")
    report = json.loads((out / "annotation_report.json").read_text())
    assert summary["pointing_hit_rate"] == report["pointing_hit_rate"]
    assert summary["pointing_ceiling"] == report["pointing_ceiling"]
    for name in expected - {"metrics.json", "annotation_report.json", "report.html"}:
        with Image.open(out / name) as png:
            assert png.mode == "RGB"


def test_metrics_json(report_run) -> None:
    metrics = json.loads((report_run.out / "metrics.json").read_text())
    assert metrics["class_names"] == list(CLASSES) and metrics["num_images"] == 24
    assert sum(map(sum, metrics["confusion_matrix"])) == 24
    for key in ("precision", "recall", "auc"):
        assert set(metrics[key]) == set(CLASSES)
    assert metrics["model"]["arch"] == "resnet18" and metrics["model"]["target_layer"] == "layer4"
    for name, rows in metrics["gallery"].items():
        for kind in ("TP", "FP", "FN"):
            assert len(rows[kind]) == min(3, rows["available"][kind])
            if rows["available"][kind] < 3:
                warning = f"gallery {name}: only {rows['available'][kind]} {kind} example(s)"
                assert any(w.startswith(warning) for w in metrics["warnings"])
                assert warning in report_run.stderr


def test_report_says_what_it_wrote(report_run) -> None:
    assert f"wrote 7 files to {report_run.out}/" in report_run.stderr
    assert "report.html in a browser" in report_run.stderr


def test_figures_carry_bootstrap_intervals(report_run) -> None:
    metrics = json.loads((report_run.out / "metrics.json").read_text())
    intervals = metrics["intervals"]
    low, high = intervals["accuracy"]
    assert low <= metrics["accuracy"] <= high and low < high  # 24 images: a wide interval
    for name in CLASSES:
        low, high = intervals["recall"][name]
        assert 0.0 <= low <= metrics["recall"][name] <= high <= 1.0
    assert 0.0 <= metrics["ece"] <= 1.0 and len(intervals["ece"]) == 2
    report = json.loads((report_run.out / "annotation_report.json").read_text())
    low, high = report["intervals"]["pointing_hit_rate"]
    assert low <= report["pointing_hit_rate"] <= high
    page = (report_run.out / "report.html").read_text()
    assert f"[{intervals['accuracy'][0]:.3f}, {intervals['accuracy'][1]:.3f}]" in page
    assert "bootstrap intervals" in page


def test_annotation_report_json(report_run) -> None:
    report = json.loads((report_run.out / "annotation_report.json").read_text())
    for key in ("per_image", "mean_iou", "num_images", "iou_threshold", "summary"):
        assert key in report  # the predecessor's fields
    assert report["iou_threshold"] == 0.5 and report["num_images"] == len(report["per_image"])
    assert report["num_images"] >= 1  # the tiny model gets some tumours right
    for record in report["per_image"]:
        assert {"image_id", "class", "confidence", "iou", "mask"} <= set(record)
        assert record["class"] in ("Benign", "Malignant")
        if record["iou"] is None:
            assert record["reason"]  # null, with the reason; never a silent 0
        else:
            assert 0 <= record["iou"] <= record["iou_best"] <= 1
            assert str(record["best_threshold"]) in record["iou_by_threshold"]
            assert isinstance(record["pointing_hit"], bool)
            # A real CAM peaks on a cell centre: it can only hit a lesion that holds one.
            assert record["pointing_reachable"] or not record["pointing_hit"]
            assert 0 <= record["energy_in_lesion"] <= 1
            assert record["mask"]["from_polygon"] + record["mask"]["from_rectangle"] >= 1
    scored = [r for r in report["per_image"] if r["iou"] is not None]
    assert report["num_scored"] == len(scored) >= 1  # the seeded fixture scores some
    assert report["mean_iou"] == pytest.approx(sum(r["iou"] for r in scored) / len(scored))
    assert set(report["medians"]) == {"iou", "iou_best", "energy_in_lesion", "lesion_fraction"}
    assert report["pointing_hit_rate"] == pytest.approx(
        sum(r["pointing_hit"] for r in scored) / len(scored)
    )
    assert report["pointing_ceiling"] == pytest.approx(
        sum(r["pointing_reachable"] for r in scored) / len(scored)
    )
    assert report["pointing_hit_rate"] <= report["pointing_ceiling"]
    # resnet18 has stride 32: a 2 x 2 grid at the tiny model's 64 px
    assert report["cam_grid"] == [2, 2] == report["model"]["cam_grid"]


def test_report_html_is_self_contained(report_run) -> None:
    html = (report_run.out / "report.html").read_text()
    assert "not for clinical use" in html
    sources = re.findall(r'<img [^>]*?src="([^"]+)"', html)
    galleries, comparisons = 3, 1  # the seeded fixture always scores some images
    assert len(sources) >= galleries + comparisons
    for source in sources:
        assert source.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as picture:
            picture.verify()
    assert "http://" not in html and "https://" not in html
    # One inline script (it sorts the table of every image) that loads nothing.
    assert html.count("<script") == 1 and "<script>" in html
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    for loader in ("fetch", "XMLHttpRequest", "import", "src", "WebSocket", "location", "http"):
        assert loader not in script


def test_gallery_and_annotations_on_the_test_split(synth_data, tiny_checkpoint, tmp_path) -> None:
    split = split_dataset(load_dataset(synth_data), seed=0)
    split_file = tmp_path / "split.json"
    write_split(split_file, split)
    assert_valid(json.loads(split_file.read_text()), "split")
    common = ["--data", synth_data, "--split", split_file, "--checkpoint", tiny_checkpoint]
    gallery = _run(["gallery", *common, "--out", tmp_path / "g", "--k", "4"])
    assert gallery.exit_code == 0, gallery.stderr
    metrics = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert metrics["num_images"] == len(split["test"]) and "test part" in metrics["subset"]
    assert json.loads(gallery.stdout)["images"] == len(split["test"])
    assert_valid(json.loads(gallery.stdout), "explain_summary")
    annotations = _run(["annotations", *common, "--out", tmp_path / "a", "--iou-threshold", "0.3"])
    assert annotations.exit_code == 0, annotations.stderr
    assert_valid(json.loads(annotations.stdout), "explain_summary")
    report = json.loads((tmp_path / "a" / "annotation_report.json").read_text())
    assert report["iou_threshold"] == 0.3
    test_ids = {s.image_id for s in split["test"]}
    assert {r["image_id"] for r in report["per_image"]} <= test_ids


def test_split_of_another_dataset_is_refused(synth_data, tiny_checkpoint, tmp_path) -> None:
    split_file = tmp_path / "split.json"
    write_split(split_file, {"train": [], "val": [], "test": ["IMG999999.jpeg"]})
    result = _run(
        [
            *("gallery", "--data", synth_data, "--split", split_file),
            *("--checkpoint", tiny_checkpoint, "--out", tmp_path / "g", "--quiet"),
        ]
    )
    assert result.exit_code == 1 and "IMG999999.jpeg" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_unreadable_image_in_the_dataset(synth_data, tiny_checkpoint, tmp_path) -> None:
    """One corrupt file: recorded and reported, everything else written, exit code 1."""
    data = tmp_path / "BTXRD"
    shutil.copytree(synth_data, data)
    victim = sorted((data / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    result = _run(
        [
            *("gallery", "--data", data, "--checkpoint", tiny_checkpoint),
            *("--out", tmp_path / "g", "--quiet"),
        ]
    )
    assert result.exit_code == 1
    assert result.stderr.count(": error: ") == 1 and victim.name in result.stderr
    summary = json.loads(result.stdout)
    assert summary["unreadable"] == 1 and summary["images"] == 23
    metrics = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert [f["image_id"] for f in metrics["failed"]] == [victim.name]
    assert (tmp_path / "g" / "gallery_Benign.png").is_file()


# --- bad annotations: that image's IoU is null with the reason, never 0 ---------------------


def _wrong_size(data: dict) -> str:
    return json.dumps({**data, "imageWidth": data["imageWidth"] + 40})


def _polygons(data: dict, points: list) -> str:
    shapes = [
        {**s, "points": points} if s["shape_type"] == "polygon" else s for s in data["shapes"]
    ]
    return json.dumps({**data, "shapes": shapes})


def _zero_area(data: dict) -> str:
    return _polygons(data, [[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])


def _self_intersecting(data: dict) -> str:
    return _polygons(data, [[10.0, 10.0], [60.0, 60.0], [60.0, 10.0], [10.0, 90.0]])


def _no_shapes(data: dict) -> str:
    return json.dumps({**data, "shapes": []})


def _malformed(data: dict) -> str:
    return json.dumps(data)[:-20]


def _million_points(data: dict) -> str:
    """A generated outline of 10^6 points (checking it for self-crossings took minutes)."""
    angles = np.linspace(0.0, 2 * np.pi, 1_000_000, endpoint=False)
    return _polygons(
        data, np.stack([40 + 20 * np.cos(angles), 40 + 20 * np.sin(angles)], 1).tolist()
    )


def _nested_deeply(data: dict) -> str:
    return "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_wrong_size, "image but the image is"),
        (_zero_area, "has zero area"),
        (_self_intersecting, "crosses itself"),
        (_no_shapes, "has no rectangle or polygon"),
        (_malformed, "not valid JSON"),
        (_million_points, "more than the 5,000"),
        (_nested_deeply, "nested too deeply"),
    ],
    ids=[
        "size-disagrees",
        "zero-area-polygon",
        "self-intersecting-polygon",
        "no-shapes",
        "bad-json",
        "million-point-polygon",
        "json-nested-100000-deep",
    ],
)
def test_bad_annotation_gives_a_null_iou_with_the_reason(
    synth_data, tiny_checkpoint, report_run, tmp_path, corrupt, reason
) -> None:
    before = json.loads((report_run.out / "annotation_report.json").read_text())
    victim = next(r["image_id"] for r in before["per_image"] if r["iou"] is not None)
    data = tmp_path / "BTXRD"
    shutil.copytree(synth_data, data)
    annotation = data / "Annotations" / (Path(victim).stem + ".json")
    annotation.write_text(corrupt(json.loads(annotation.read_text())), encoding="utf-8")
    result = _run(
        [
            *("annotations", "--data", data, "--checkpoint", tiny_checkpoint),
            *("--out", tmp_path / "a", "--quiet"),
        ]
    )
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "a" / "annotation_report.json").read_text())
    (record,) = [r for r in report["per_image"] if r["image_id"] == victim]
    assert record["iou"] is None and reason in record["reason"], record
    others = [r for r in report["per_image"] if r["image_id"] != victim]
    assert sum(r["iou"] is not None for r in others) == report["num_scored"]
