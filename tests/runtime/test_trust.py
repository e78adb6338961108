"""The runtime refuses to guess: calibrated scores and the out-of-distribution gate of a model
that carries them (``btxrd.trust`` metadata plus the ``probabilities`` and ``ood_score`` outputs).

The model here is the tiny exported model with both outputs added to its graph: probabilities =
softmax(logits / 2), and an ood_score that is the mean of the normalised input, so a bright image
is "out of distribution" and a dark one is not. Export's own fitting is tested in tests/export.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from schema_check import assert_valid

from btxrd.runtime.cli.run import main
from btxrd.runtime.model.contract import (
    METADATA_PREFIX,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    Calibration,
    FittedOn,
    OodGate,
    Trust,
)
from btxrd.runtime.model.session import OnnxModel

TEMPERATURE = 2.0
THRESHOLD = 0.0
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def _trust() -> Trust:
    fitted = FittedOn(data="synthetic", split="val", num_images=10)
    return Trust(
        calibration=Calibration(temperature=TEMPERATURE, fitted_on=fitted),
        ood=OodGate(
            method="mahalanobis",
            threshold=THRESHOLD,
            retention=0.99,
            fitted_on=fitted,
            threshold_set_on=fitted,
        ),
    )


def _with_trust_outputs(proto, *, outputs: bool = True):
    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    if outputs:
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(TEMPERATURE, np.float32), "trust_temperature"),
                numpy_helper.from_array(np.array([1, 2, 3], np.int64), "trust_axes"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Div", ["logits", "trust_temperature"], ["trust_scaled"]),
                helper.make_node("Softmax", ["trust_scaled"], [PROBABILITIES_NAME], axis=1),
                helper.make_node(
                    "ReduceMean", ["image", "trust_axes"], [OOD_SCORE_NAME], keepdims=0
                ),
            ]
        )
        float_type = onnx.TensorProto.FLOAT
        graph.output.extend(
            [
                helper.make_tensor_value_info(PROBABILITIES_NAME, float_type, ["N", 3]),
                helper.make_tensor_value_info(OOD_SCORE_NAME, float_type, ["N"]),
            ]
        )
    entry = model.metadata_props.add()
    entry.key = METADATA_PREFIX + "trust"
    entry.value = json.dumps(_trust().to_json())
    return model


@pytest.fixture(scope="module")
def trust_onnx(tiny_model_proto, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "gated.onnx"
    path.write_bytes(_with_trust_outputs(tiny_model_proto).SerializeToString())
    return path


@pytest.fixture
def dark_and_bright(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    dark, bright = tmp_path / "dark.png", tmp_path / "bright.png"
    Image.fromarray(rng.integers(10, 60, (96, 80), dtype=np.uint8)).save(dark)
    Image.fromarray(rng.integers(190, 250, (96, 80), dtype=np.uint8)).save(bright)
    return dark, bright


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


def _records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_scores_are_the_calibrated_probabilities(trust_onnx, dark_and_bright):
    dark, _ = dark_and_bright
    result = run("--model", trust_onnx, "--jsonl", "--quiet", dark)
    assert result.exit_code == 0, result.stderr
    (record,) = _records(result)
    model = OnnxModel(trust_onnx)
    from btxrd.runtime.decode.image import load_image
    from btxrd.runtime.model.preprocess import preprocess

    batch = preprocess(load_image(dark), model.info.metadata.preprocessing)[None]
    logits = model.run(batch).logits[0].astype(np.float64)
    expected = np.exp(logits / TEMPERATURE) / np.exp(logits / TEMPERATURE).sum()
    got = np.array([record["scores"][name] for name in model.info.class_names])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert record["prediction"] == model.info.class_names[int(np.argmax(logits))]
    raw = np.exp(logits) / np.exp(logits).sum()
    assert not np.allclose(got, raw, atol=1e-3)  # calibration did change the numbers
    assert record["ood"] == {
        "score": pytest.approx(float(batch.mean()), abs=1e-5),
        "threshold": THRESHOLD,
        "method": "mahalanobis",
        "in_distribution": True,
        "gate": "on",
    }


def test_an_image_unlike_the_training_data_is_not_classified(trust_onnx, dark_and_bright):
    dark, bright = dark_and_bright
    result = run("--model", trust_onnx, "--jsonl", "--quiet", dark, bright)
    assert result.exit_code == 1, result.stderr
    kept, refused = _records(result)
    assert kept["prediction"] is not None and kept["error"] is None
    assert refused["prediction"] is None and refused["confidence"] is None
    assert refused["ood"]["in_distribution"] is False and refused["ood"]["score"] > THRESHOLD
    # No class probability where a reader could take it for an answer; kept for audit only.
    assert refused["scores"] is None
    withheld = refused["ood"]["withheld_scores"]
    assert list(withheld) == list(kept["scores"]) and sum(withheld.values()) == pytest.approx(1.0)
    assert "withheld_scores" not in kept["ood"]
    assert "unlike the images this model was trained on" in refused["error"]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("btxrd-run: not classified: ") and str(bright) in line
    assert "OOD score" in line and "not classified" in line and "Traceback" not in line


def test_no_ood_gate_classifies_and_marks_each_record(trust_onnx, dark_and_bright):
    dark, bright = dark_and_bright
    result = run("--model", trust_onnx, "--jsonl", "--no-ood-gate", dark, bright)
    assert result.exit_code == 0, result.stderr
    assert "--no-ood-gate" in result.stderr
    kept, forced = _records(result)
    assert forced["prediction"] is not None and forced["error"] is None
    assert forced["ood"]["gate"] == "off" and forced["ood"]["in_distribution"] is False
    assert sum(forced["scores"].values()) == pytest.approx(1.0)  # today's behaviour, marked
    assert "withheld_scores" not in forced["ood"]
    assert any("classified anyway" in note for note in forced["notes"])
    assert kept["ood"]["gate"] == "off" and not any("anyway" in n for n in kept["notes"])


def test_table_and_csv_show_the_verdict(trust_onnx, dark_and_bright):
    dark, bright = dark_and_bright
    table = run("--model", trust_onnx, "--quiet", dark, bright)
    assert table.exit_code == 1
    (row,) = [line for line in table.stdout.splitlines() if line.startswith("bright.png")]
    assert "NOT CLASSIFIED" in row and "OOD score" in row
    assert "1 not classified (unlike the training images)" in table.stdout
    sheet = run("--model", trust_onnx, "--csv", "--quiet", dark, bright)
    rows = list(csv.DictReader(io.StringIO(sheet.stdout)))
    assert [r["in_distribution"] for r in rows] == ["true", "false"]
    assert rows[1]["prediction"] == "" and float(rows[1]["ood_score"]) > THRESHOLD
    names = ("confidence", "Normal", "Benign", "Malignant")
    assert all(rows[0][n] for n in names) and not any(rows[1][n] for n in names)


def test_parquet_has_no_probability_of_a_refused_image(trust_onnx, dark_and_bright, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    dark, bright = dark_and_bright
    out = tmp_path / "results.parquet"
    result = run("--model", trust_onnx, "--parquet", "-o", out, "--quiet", dark, bright)
    assert result.exit_code == 1, result.stderr
    rows = pq.read_table(out).sort_by("input_index").to_pylist()
    probabilities = [k for k in rows[0] if k.startswith("prob_")] + ["confidence"]
    assert len(probabilities) == 4
    assert all(rows[0][k] is not None for k in probabilities)
    assert all(rows[1][k] is None for k in probabilities) and rows[1]["in_distribution"] is False


def test_no_overlay_for_a_refused_image(trust_onnx, dark_and_bright, tmp_path):
    dark, bright = dark_and_bright
    cams = tmp_path / "cams"
    result = run("--model", trust_onnx, "--cam", "--cam-dir", cams, "--quiet", dark, bright)
    assert result.exit_code == 1
    assert [p.name for p in cams.iterdir()] == ["dark_cam.png"]


def test_info_says_whether_the_gate_is_there(trust_onnx, tiny_onnx):
    gated_info = json.loads(run("--model", trust_onnx, "--info", "--json").stdout)
    plain_info = json.loads(run("--model", tiny_onnx, "--info", "--json").stdout)
    assert_valid(gated_info, "model_info")
    assert_valid(plain_info, "model_info")
    gated = gated_info["trust"]
    assert gated["calibration"]["temperature"] == TEMPERATURE
    assert gated["ood_gate"]["threshold"] == THRESHOLD
    assert gated["ood_gate"]["retention"] == 0.99
    assert gated_info["refusal_explanation"].startswith("This image is unlike the images")
    assert plain_info["refusal_explanation"] is None
    plain = plain_info["trust"]
    assert plain["ood_gate"].startswith("absent")
    assert plain["calibration"].startswith("absent")


def test_a_model_without_a_gate_still_runs_and_says_so(tiny_onnx, dark_and_bright):
    dark, bright = dark_and_bright
    result = run("--model", tiny_onnx, "--jsonl", dark, bright)
    assert result.exit_code == 0, result.stderr
    assert "no out-of-distribution gate" in result.stderr
    assert all(r["ood"] is None and r["prediction"] for r in _records(result))


def test_trust_metadata_without_its_outputs_is_refused(tiny_model_proto, tmp_path, dark_and_bright):
    broken = tmp_path / "promises.onnx"
    broken.write_bytes(_with_trust_outputs(tiny_model_proto, outputs=False).SerializeToString())
    result = run("--model", broken, "--json", dark_and_bright[0])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert str(broken) in line and "probabilities" in line and "missing" in line


def test_selftest_compares_what_export_stored(trust_onnx):
    """Export stored the raw softmax of the reference images (no "kind"): the selftest compares
    that, not the calibrated scores, whatever the gate says about the patterns."""
    result = run("--model", trust_onnx, "--selftest")
    assert result.exit_code == 0, result.stdout
    assert "selftest passed" in result.stdout
