"""The API against the CLI it stands for: the same records as ``btxrd-run --json`` on every
sample radiograph, ``--info`` as /api/model, the ``--cam`` overlay pixel for pixel, the CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from schema_check import assert_valid
from serve_support import (
    REPO_ROOT,
    classify,
    classify_paths,
    cli_json,
    leftovers,
    request,
    sample_images,
)

from btxrd.runtime.model.classifier import Classifier
from btxrd.runtime.output.overlay import normalise_cam, overlay
from btxrd.runtime.serve.views import VIEW_MAX_SIDE

pytest.importorskip("starlette")

TOLERANCE = 1e-6
# What differs by construction: the CLI's path is the one it was given, the server's the
# upload's name; timings are the run's own.
IGNORED = ("path", "timings_ms")


def assert_same_scores(served: dict, cli: dict) -> None:
    assert served.keys() == cli.keys()
    for cls, p in cli.items():
        assert served[cls] == pytest.approx(p, abs=TOLERANCE), cls


def assert_same_record(served: dict, cli: dict, name: str) -> None:
    assert served["path"] == name
    for key in cli:
        if key in IGNORED:
            continue
        if key == "scores":
            assert (served[key] is None) == (cli[key] is None)  # None: refused
            assert_same_scores(served[key] or {}, cli[key] or {})
        elif key == "confidence" and cli[key] is not None:
            assert served[key] == pytest.approx(cli[key], abs=TOLERANCE)
        elif key == "ood" and cli[key] is not None:
            assert served[key]["score"] == pytest.approx(cli[key]["score"], rel=1e-5, abs=1e-6)
            numbers = ("score", "withheld_scores")
            assert {k: v for k, v in served[key].items() if k not in numbers} == {
                k: v for k, v in cli[key].items() if k not in numbers
            }
            assert_same_scores(
                served[key].get("withheld_scores", {}), cli[key].get("withheld_scores", {})
            )
        elif key in ("error", "notes"):
            # Messages name the file as it was given: the CLI its path, the server the upload.
            given = cli["path"]
            if cli[key] is None:
                expected = None
            elif isinstance(cli[key], str):
                expected = cli[key].replace(given, name)
            else:
                expected = [n.replace(given, name) for n in cli[key]]
            assert served[key] == expected, key
        else:
            assert served[key] == cli[key], key


def test_health_names_the_model_and_the_limits(server):
    status, headers, body = request(server, "GET", "/api/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert health["model"]["file"] == "btxrd-demo.onnx"
    assert health["limits"]["max_upload_mb"] == 64
    assert "default-src 'self'" in headers["content-security-policy"]


def test_model_is_what_info_prints(server):
    done = subprocess.run(
        [sys.executable, "-m", "btxrd.runtime.cli.run", "--info", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if k != "BTXRD_MODEL"},
        check=True,
    )
    status, _, body = request(server, "GET", "/api/model")
    assert status == 200
    assert json.loads(body) == json.loads(done.stdout)


def test_every_sample_gets_the_cli_record_in_one_request_and_one_by_one(server):
    samples = sample_images()
    cli = cli_json(*samples)
    status, served = classify_paths(server, samples)
    assert status == 200, served
    assert_valid(
        {k: v for k, v in served.items() if k not in ("views", "errors")}, "results_document"
    )
    assert served["model"] == cli["model"]
    assert served["errors"] == []
    for key in ("inputs", "classified", "failed", "refused_out_of_distribution", "per_class"):
        assert served["summary"][key] == cli["summary"][key]
    for record, expected, path in zip(served["results"], cli["results"], samples, strict=True):
        assert_same_record(record, expected, path.name)
    for path, expected in zip(samples, cli["results"], strict=True):
        status, one = classify_paths(server, [path])
        assert status == 200
        assert_same_record(one["results"][0], expected, path.name)
    assert leftovers(server) == []


def test_the_overlay_is_what_cam_draws_pixel_for_pixel(server, tmp_path):
    samples = sample_images()
    subprocess.run(
        [sys.executable, "-m", "btxrd.runtime.cli.run", "--quiet", "--cam", "--cam-dir", tmp_path]
        + [str(p) for p in samples],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    status, served = classify_paths(server, samples)
    assert status == 200
    for path, record, view in zip(samples, served["results"], served["views"], strict=True):
        status, headers, png = request(server, "GET", view["overlays"][record["prediction"]])
        assert status == 200 and headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(png))
        cam = Image.open(tmp_path / f"{path.stem}_cam.png")
        assert picture.size == cam.size, path.name
        assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(cam.convert("RGB")))
        assert picture.info["btxrd.class"] == record["prediction"]


def test_the_heatmap_layer_at_the_default_opacity_is_the_overlay(server):
    """The page stacks the layer (opacity = attention) over the film; at CSS opacity alpha this
    is overlay(film, map, alpha), to one grey level of rounding."""

    path = sample_images()[0]
    status, served = classify_paths(server, [path])
    assert status == 200
    view, record = served["views"][0], served["results"][0]
    film = Image.open(io.BytesIO(request(server, "GET", view["film"])[2]))
    layer = Image.open(
        io.BytesIO(request(server, "GET", view["heatmaps"][record["prediction"]])[2])
    )
    assert film.size == Image.open(path).size and max(film.size) <= VIEW_MAX_SIDE
    assert layer.mode == "RGBA" and layer.size == film.size
    alpha = 0.45
    rgba = np.asarray(layer, dtype=np.float64)
    base = np.asarray(film.convert("RGB"), dtype=np.float64)
    weight = alpha * rgba[..., 3:] / 255
    composed = (1 - weight) * base + weight * rgba[..., :3]
    classifier = Classifier(REPO_ROOT / "models" / "btxrd-demo.onnx")
    prediction = classifier.predict(path, with_cam=True)
    index = classifier.class_names.index(record["prediction"])
    expected = np.asarray(overlay(film, normalise_cam(prediction.cam[index]), alpha), np.float64)
    assert np.abs(composed - expected).max() <= 1.5


def test_export_writes_the_cli_csv_and_a_valid_document(server, tmp_path):
    samples = sample_images()
    _, served = classify_paths(server, samples)
    body = json.dumps({"results": served["results"]}).encode()
    headers = {"Content-Type": "application/json"}
    status, answer_headers, text = request(server, "POST", "/api/export?format=csv", body, headers)
    assert status == 200 and answer_headers["content-type"].startswith("text/csv")
    out = tmp_path / "cli.csv"
    subprocess.run(
        [sys.executable, "-m", "btxrd.runtime.cli.run", "--quiet", "--csv", "-o", out]
        + [str(p) for p in samples],
        check=True,
        cwd=REPO_ROOT,
    )
    served_rows = list(csv.DictReader(io.StringIO(text.decode())))
    cli_rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert served_rows[0].keys() == cli_rows[0].keys()
    for mine, theirs in zip(served_rows, cli_rows, strict=True):
        for column in theirs:
            if column == "path":
                continue
            if column in ("image_name", "path_escaped", "prediction", "in_distribution", "error"):
                assert mine[column] == theirs[column]
            elif theirs[column]:
                assert float(mine[column]) == pytest.approx(float(theirs[column]), abs=2e-6)
    status, _, text = request(server, "POST", "/api/export?format=json", body, headers)
    document = json.loads(text)
    assert status == 200
    assert_valid(document, "results_document")
    assert document["results"] == served["results"]
    assert document["summary"]["classified"] == len(samples)


def test_duplicate_names_are_told_apart_and_names_are_labels_only(server):
    data = sample_images()[0].read_bytes()
    files = [("knee.jpeg", data), ("knee.jpeg", data), ("../../../etc/passwd.jpeg", data)]
    status, served = classify(server, files)
    assert status == 200
    names = [r["display_name"] for r in served["results"]]
    assert names == ["knee.jpeg", "knee.jpeg (2)", "passwd.jpeg"]
    assert served["results"][2]["path"] == "../../../etc/passwd.jpeg"
    assert served["results"][2]["image_name"] == "passwd.jpeg"
    assert leftovers(server) == []


def test_a_dicom_upload_gets_the_cli_record_with_its_identifiers(server, tmp_path):
    """Known by its suffix or, under any name, by its DICM preamble; its identifiers travel in
    the record and its film is shown as the model read it."""
    pytest.importorskip("pydicom")
    from dicom_files import ramp, write_dicom

    path = write_dicom(
        tmp_path / "knee.dcm", ramp(240, 200), BodyPartExamined="KNEE", StudyInstanceUID="1.2.3"
    )
    (cli,) = cli_json(path)["results"]
    assert cli["identifiers"]["fields"]["body_part_examined"] == "KNEE"
    for name in ("knee.dcm", "knee"):
        status, served = classify(server, [(name, path.read_bytes())])
        assert status in (200, 422)
        (record,) = served["results"]
        named = {**cli, "image_name": name, "display_name": name}
        assert_same_record(record, named, name)
        if record["prediction"] is not None:
            film = request(server, "GET", served["views"][0]["film"])[2]
            assert Image.open(io.BytesIO(film)).size == (200, 240)
