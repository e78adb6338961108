"""`btxrd-export`: one self-describing ONNX file, parity proven on real image files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from schema_check import assert_valid

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from btxrd.export.checkpoint import build_model, load_checkpoint  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.export.onnx_export import build_metadata, export_model_proto, finalise  # noqa: E402
from btxrd.export.parity import check_parity, write_parity_images  # noqa: E402
from btxrd.runtime.model.contract import ModelMetadata, Preprocessing  # noqa: E402

pytestmark = pytest.mark.torch
PARITY_KINDS = {
    "grayscale JPEG",
    "RGB JPEG",
    "8-bit PNG",
    "16-bit PNG",
    "EXIF-rotated JPEG",
    "RGBA PNG",
    "palette PNG",
    "very wide PNG",
    "very tall JPEG",
}


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, radiograph_dir: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = CliRunner().invoke(
        export_main,
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--parity-images",
            str(radiograph_dir),
        ],
    )
    return {"result": result, "onnx": out, "report": out.with_suffix(".parity.json")}


def test_export_succeeds_and_reports_parity(exported: dict) -> None:
    result = exported["result"]
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout and "parity on 18 images" in result.stdout
    report = json.loads(exported["report"].read_text())
    assert report["passed"] and report["failures"] == []
    assert_valid(report, "parity_report")
    assert "temperature" not in report  # no calibration data: no trust figures
    assert report["max_abs_diff"] <= 1e-4
    assert report["top1_agreement"] == 1.0
    assert {row["kind"] for row in report["images"]} == PARITY_KINDS
    # The check decodes exactly; --fast-decode is only compared with it on the parity JPEGs.
    assert report["decode"] == "exact"
    assert report["fast_decode"]["decoded_at_reduced_scale"] > 0
    assert report["fast_decode"]["top1_agreement"] is not None
    # A varied model: the parity images do not all score alike, so agreement means something.
    spreads = {round(max(row["torch_probabilities"]), 3) for row in report["images"]}
    assert len(spreads) > 5


def test_metadata_is_json_and_complete(exported: dict, tiny_checkpoint: Path) -> None:
    proto = onnx.load(str(exported["onnx"]))
    props = {p.key: p.value for p in proto.metadata_props}
    for value in props.values():
        json.loads(value)
    meta = ModelMetadata.from_metadata_props(props, "tiny.onnx")
    assert meta.class_names == ("Normal", "Benign", "Malignant")
    assert meta.arch == "resnet18"
    assert meta.preprocessing.image_size == (64, 64)
    assert meta.preprocessing.resize == "bilinear" and meta.preprocessing.exif_transpose
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert meta.provenance["checkpoint_sha256"] == sha
    assert meta.provenance["torch_version"] == torch.__version__
    assert meta.provenance["onnx_version"] == onnx.__version__
    assert "export_date" in meta.provenance
    assert "not for clinical use" in meta.intended_use
    assert set(meta.reference_scores["images"]) == {"bar", "rings", "ramp"}


def test_graph_is_checked_dynamic_and_loadable(exported: dict) -> None:
    proto = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    for n in (1, 5):
        logits, cam = session.run(None, {"image": np.zeros((n, 3, 64, 64), np.float32)})
        assert logits.shape == (n, 3) and cam.shape == (n, 3, 2, 2)


def test_ir_version_is_clamped_to_what_onnxruntime_reads(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    model, arch = build_model(ckpt)
    proto = export_model_proto(model, arch, (64, 64))
    proto.ir_version = onnx.IR_VERSION + 5  # newer than any onnxruntime reads
    data = finalise(proto, build_metadata(ckpt, arch, {}, None))
    clamped = onnx.load_from_string(data)
    assert clamped.ir_version < onnx.IR_VERSION + 5
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_parity_check_fails_for_a_different_model(
    exported: dict, make_model, radiograph_dir: Path, find_images, tmp_path: Path
) -> None:
    # The check must be able to fail: compare the exported file against an unrelated network.
    cases = write_parity_images(find_images(radiograph_dir), tmp_path / "images")
    other = make_model("resnet18", seed=7)
    report = check_parity(other, exported["onnx"], cases, Preprocessing(image_size=(64, 64)))
    assert not report["passed"] and report["failures"]


def test_export_refuses_an_unsafe_checkpoint_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "np.pt"
    torch.save({"model_state_dict": {}, "class_names": ["a", "b"], "w": np.ones(2)}, path)
    result = CliRunner().invoke(
        export_main, ["--checkpoint", str(path), "--out", str(tmp_path / "x.onnx")]
    )
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "numpy" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_predecessor_checkpoint_exports(
    tmp_path: Path, radiograph_dir: Path, make_predecessor_checkpoint
) -> None:
    path = make_predecessor_checkpoint(tmp_path / "best_stratified.pt")
    out = tmp_path / "predecessor.onnx"
    result = CliRunner().invoke(
        export_main,
        ["--checkpoint", str(path), "--out", str(out), "--parity-images", str(radiograph_dir)],
    )
    assert result.exit_code == 0, result.stderr
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = ModelMetadata.from_metadata_props(props, str(out))
    assert meta.arch == "timm/efficientnet_b0"
    assert meta.provenance["epoch"] == 12
    assert json.loads(out.with_suffix(".parity.json").read_text())["passed"]
