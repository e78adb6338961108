"""Every JSON btxrd-run writes is valid against the one results schema, and the schema is not
vacuous: it refuses records that break its rules."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from schema_check import SCHEMA_PATH, assert_valid

from btxrd.runtime.cli import main

CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


@pytest.fixture
def inputs(phantom_images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    return [*phantom_images.values(), broken]


def test_json_document_and_jsonl_lines_follow_the_schema(tiny_onnx, inputs, tmp_path):
    document = json.loads(run("--model", tiny_onnx, "--json", "--quiet", *inputs).stdout)
    assert_valid(document, "results_document")
    assert any(r["error"] for r in document["results"])  # a failure record is checked too
    for line in run("--model", tiny_onnx, "--jsonl", "--quiet", *inputs).stdout.splitlines():
        assert_valid(json.loads(line), "jsonl_record")


def test_validation_figures_follow_the_schema(tiny_onnx, phantom_images, tmp_path):
    labels = tmp_path / "labels.csv"
    names = [p.name for p in phantom_images.values()]
    rows = [f"{name},{('Normal', 'Benign', 'Malignant')[i % 3]}" for i, name in enumerate(names)]
    labels.write_text("image,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "validation.json"
    images = list(phantom_images.values())
    result = run("--model", tiny_onnx, "--labels", labels, "--metrics-out", out, *images)
    assert result.exit_code == 0, result.stderr
    assert_valid(json.loads(out.read_text()), "validation")


@pytest.mark.parametrize(
    "change",
    [
        {"display_name": None},
        {"prediction": "Normal", "error": "and an error"},
        {"prediction": None, "error": None},
        {"confidence": 1.5},
    ],
    ids=["no-display-name", "prediction-and-error", "neither", "probability-above-1"],
)
def test_the_schema_refuses_a_broken_record(tiny_onnx, phantom_images, change):
    document = json.loads(
        run("--model", tiny_onnx, "--json", "--quiet", *phantom_images.values()).stdout
    )
    record = {**document["results"][0], **change}
    with pytest.raises(AssertionError):
        assert_valid(record, "record")


def test_the_schema_ships_with_the_package():
    from importlib.resources import files

    shipped = files("btxrd.runtime").joinpath("schemas/results.schema.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(SCHEMA_PATH.read_text())
