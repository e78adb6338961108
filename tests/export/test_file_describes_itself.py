"""An exported file says what it is without btxrd: its description (``doc_string``) names the
model, its version, classes, intended use and every input and output with its shape and
meaning; ``btxrd-run --info`` prints the same on a terminal, and all of it with ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from btxrd.export.checkpoint import save_checkpoint
from btxrd.export.cli import main as export_main
from btxrd.runtime.cli.run import main as run_main
from btxrd.runtime.model.contract import TENSOR_MEANINGS

pytestmark = pytest.mark.torch
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


@pytest.fixture(scope="module")
def named(make_model, radiograph_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("named")
    checkpoint = folder / "knee-classifier.pt"
    save_checkpoint(
        checkpoint,
        make_model("resnet18"),
        arch="resnet18",
        class_names=("Normal", "Benign", "Malignant"),
        image_size=64,
        model_name="knee classifier",
        model_version="1.4.0",
    )
    out = folder / "knee.onnx"
    args = [str(checkpoint), "-o", str(out), "--parity-images", str(radiograph_dir)]
    result = CliRunner().invoke(export_main, args, env=CLEAN_ENV)
    assert result.exit_code == 0, result.stderr
    assert "knee classifier version 1.4.0" in result.stdout
    return out


def test_the_description_names_the_model_and_every_tensor(named: Path) -> None:
    proto = onnx.load(named)
    text = proto.doc_string
    assert text.startswith("knee classifier version 1.4.0: bone radiograph classifier")
    assert "Classes, in output order: Normal, Benign, Malignant." in text
    assert "Research use only; not for clinical use." in text
    assert "- image [batch x 3 x 64 x 64]: the preprocessed radiograph" in text
    assert "- logits [batch x 3]: raw class scores" in text
    assert "- cam [batch x 3 x 2 x 2]: Grad-CAM of every class" in text
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.doc_string == TENSOR_MEANINGS[value.name]
    assert proto.producer_name == "btxrd-export" and proto.producer_version
    # What onnxruntime (and so C++ and C#) shows of it.
    meta = ort.InferenceSession(str(named), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.description == text and meta.producer_name == "btxrd-export"
    assert json.loads(meta.custom_metadata_map["btxrd.model"]) == {
        "name": "knee classifier",
        "version": "1.4.0",
    }


def test_the_command_line_names_the_version(make_model, radiograph_dir, tmp_path) -> None:
    checkpoint = tmp_path / "plain.pt"
    save_checkpoint(checkpoint, make_model("resnet18", num_classes=2), arch="resnet18",
                    class_names=("a", "b"), image_size=64)  # fmt: skip
    out = tmp_path / "plain.onnx"
    args = [str(checkpoint), "-o", str(out), "--parity-images", str(radiograph_dir)]
    result = CliRunner().invoke(export_main, [*args, "--model-version", "2026.12"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.stderr
    info = json.loads(
        CliRunner().invoke(run_main, ["--model", str(out), "--info", "--json"]).stdout
    )
    # The name falls back to the checkpoint's file name.
    assert info["model"] == {"name": "plain", "version": "2026.12"}


def test_info_on_a_terminal_is_a_short_summary(named: Path) -> None:
    result = CliRunner().invoke(run_main, ["--model", str(named), "--info"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{named}  (sha256 ")
    text = result.stdout
    assert "knee classifier, version 1.4.0, architecture resnet18" in text
    assert "classes        Normal, Benign, Malignant" in text
    assert "image: float32 [batch x 3 x 64 x 64]" in text
    assert "logits: float32 [batch x 3]" in text and "cam: float32 [batch x 3 x 2 x 2]" in text
    assert "calibration    none: probabilities are the raw softmax" in text
    assert "ood gate       none: every image gets a class" in text
    assert len(lines) < 20


def test_info_json_lists_inputs_and_outputs_with_their_meaning(named: Path) -> None:
    result = CliRunner().invoke(run_main, ["--model", str(named), "--info", "--json"])
    info = json.loads(result.stdout)
    assert [o["name"] for o in info["outputs"]] == ["logits", "cam"]
    (image,) = info["inputs"]
    assert image == {
        "name": "image",
        "type": "float32",
        "shape": ["batch", 3, 64, 64],
        "meaning": TENSOR_MEANINGS["image"],
    }
