"""Every JSON btxrd-run writes is valid against the one results schema, and the schema is not
vacuous: it refuses records that break its rules. The JSON files shipped in models/ and the
fuzzer's tally follow their definitions too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from schema_check import SCHEMA_PATH, assert_valid

from btxrd.runtime.cli.run import main

CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}
ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("name", "definition"),
    [
        ("btxrd-demo.parity.json", "parity_report"),
        ("btxrd-demo.metrics.json", "training_metrics"),
        ("btxrd-demo.split.json", "split"),
    ],
)
def test_the_files_shipped_with_the_demo_model_follow_the_schema(name, definition):
    assert_valid(json.loads((ROOT / "models" / name).read_text(encoding="utf-8")), definition)


@pytest.mark.parametrize(
    ("name", "definition", "change"),
    [
        ("btxrd-demo.split.json", "split", {"holdout": []}),
        ("btxrd-demo.parity.json", "parity_report", {"checkpoint_sha256": "not a digest"}),
        ("btxrd-demo.metrics.json", "training_metrics", {"history": []}),
    ],
    ids=["extra-split-part", "bad-sha256", "no-epochs"],
)
def test_the_schema_refuses_a_broken_shipped_file(name, definition, change):
    document = json.loads((ROOT / "models" / name).read_text(encoding="utf-8"))
    with pytest.raises(AssertionError):
        assert_valid({**document, **change}, definition)


def test_the_sample_annotations_follow_the_schema():
    files = sorted((ROOT / "models" / "samples" / "Annotations").glob("*.json"))
    assert files
    for path in files:
        assert_valid(json.loads(path.read_text(encoding="utf-8")), "labelme_annotation")


def test_info_follows_the_schema(demo_onnx):
    result = run("--model", demo_onnx, "--info", "--json")
    assert result.exit_code == 0, result.stderr
    assert_valid(json.loads(result.stdout), "model_info")


@pytest.mark.slow
def test_the_fuzzers_tally_follows_the_schema(tmp_path):
    """``make fuzz`` for 20 executions (instrumenting Pillow and pydicom takes most of the time)."""
    pytest.importorskip("atheris")
    (tmp_path / "results" / "fuzz").mkdir(parents=True)
    script = ROOT / "tests" / "fuzz" / "fuzz_decode.py"
    done = subprocess.run(
        [sys.executable, str(script), "-atheris_runs=20"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "results" / "fuzz" / "summary.json").read_text())
    assert_valid(summary, "fuzz_summary")
    assert summary["executions"] == 20


def test_an_undocumented_field_in_a_record_is_refused(tiny_onnx, phantom_images):
    """Every field the record builder writes is in the schema: one it does not list fails, in
    a document and in a JSON line alike."""
    images = list(phantom_images.values())
    document = json.loads(run("--model", tiny_onnx, "--json", "--quiet", *images).stdout)
    assert_valid(document, "results_document")
    document["results"][0]["surprise"] = 1
    with pytest.raises(AssertionError):
        assert_valid(document, "results_document")
    line = json.loads(
        run("--model", tiny_onnx, "--jsonl", "--quiet", images[0]).stdout.splitlines()[0]
    )
    assert_valid(line, "jsonl_record")
    with pytest.raises(AssertionError):
        assert_valid({**line, "surprise": 1}, "jsonl_record")


# A new record field, added where records are built and nowhere else: the builder's output gains
# it (Prediction.to_record, as a subprocess so the change stays there).
_NEW_FIELD = """
import sys
from btxrd.runtime.model.classifier import Prediction
built = Prediction.to_record
Prediction.to_record = lambda self: {**built(self), "view_position": "AP"}
from btxrd.runtime.cli.run import main
main(sys.argv[1:])
"""


def test_a_new_record_field_needs_the_builder_and_the_schema_only(
    tiny_onnx, phantom_images, tmp_path
):
    """Added to the record builder, a field reaches the JSON document, the JSON lines and the
    Parquet rows (a column of its own) with no writer touched; the schema refuses it until one
    line there documents it. CSV keeps its fixed table."""
    pq = pytest.importorskip("pyarrow.parquet")
    image = next(iter(phantom_images.values()))

    def run_with_field(*args: object) -> None:
        done = subprocess.run(
            [sys.executable, "-c", _NEW_FIELD, "--model", tiny_onnx, "--quiet", *args, image],
            capture_output=True,
            text=True,
        )
        assert done.returncode in (0, 1), done.stderr

    run_with_field("--json", "-o", tmp_path / "r.json")
    run_with_field("--jsonl", "-o", tmp_path / "r.jsonl")
    run_with_field("--parquet", "-o", tmp_path / "r.parquet")
    run_with_field("--csv", "-o", tmp_path / "r.csv")
    document = json.loads((tmp_path / "r.json").read_text())
    line = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    (row,) = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert document["results"][0]["view_position"] == line["view_position"] == "AP"
    assert row["view_position"] == "AP"
    assert "view_position" not in (tmp_path / "r.csv").read_text()

    with pytest.raises(AssertionError, match="view_position"):
        assert_valid(document, "results_document")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["$defs"]["record"]["properties"]["view_position"] = {"type": "string"}
    assert_valid(document, "results_document", schema)
    assert_valid(line, "jsonl_record", schema)
