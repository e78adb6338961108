"""Opening an exported model: identity, real inference, and refusals for anything unusable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from btxrd.runtime.errors import ModelError
from btxrd.runtime.model.contract import INPUT_NAME, METADATA_PREFIX
from btxrd.runtime.model.session import OnnxModel

CLASSES = ["Normal", "Benign", "Malignant"]


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 64, 64)).astype(np.float32)


def test_tiny_model_loads_with_its_identity(tiny_onnx):
    model = OnnxModel(tiny_onnx)
    info = model.info
    assert info.sha256 == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert info.class_names == tuple(CLASSES)
    assert info.has_cam
    assert info.metadata.preprocessing.image_size == (64, 64)
    identity = info.identity()
    assert identity == {
        "file": "tiny.onnx",
        "sha256": info.sha256,
        "arch": "resnet18",
        "class_names": CLASSES,
        "schema_version": 1,
    }
    json.dumps(identity)  # identity goes into every JSON result


@pytest.mark.parametrize("n", [1, 2, 5])
def test_any_batch_size_runs(tiny_onnx, n):
    model = OnnxModel(tiny_onnx, threads=1)
    outputs = model.run(_batch(n), with_cam=True)
    logits, cams = outputs.logits, outputs.cam
    assert logits.shape == (n, 3)
    assert cams is not None and cams.shape[:2] == (n, 3)
    assert (cams >= 0).all()  # Grad-CAM maps are ReLU'd
    plain = model.run(_batch(n))
    logits_only = plain.logits
    assert plain.cam is None and plain.probabilities is None and plain.ood_score is None
    np.testing.assert_allclose(logits_only, logits, rtol=0, atol=1e-5)


def test_rows_do_not_depend_on_the_rest_of_the_batch(tiny_onnx):
    model = OnnxModel(tiny_onnx)
    batch = _batch(5, seed=1)
    together = model.run(batch).logits
    alone = np.concatenate([model.run(batch[i : i + 1]).logits for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-4)


def test_outputs_match_the_pytorch_model(tiny_onnx, tiny_torch_model):
    torch = pytest.importorskip("torch")
    batch = _batch(3, seed=2)
    with torch.no_grad():
        reference = tiny_torch_model.model(torch.from_numpy(batch)).numpy()
    logits = OnnxModel(tiny_onnx).run(batch).logits
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-3)
    # the fixture is meant to be decisive: scores are far from uniform
    assert np.ptp(logits, axis=1).min() > 1.0


# --- refusals that need no torch ---------------------------------------------------------


def _missing(path: Path) -> Path:
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _lfs_pointer(path: Path) -> Path:
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 44000000\n",
        encoding="utf-8",
    )
    return path


def _not_onnx(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is a zip of something else" * 20)
    return path


def _png_renamed(path: Path) -> Path:
    Image.new("L", (32, 32)).save(path, format="PNG")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "not found"),
        (_empty, "empty"),
        (_lfs_pointer, "git lfs pull"),
        (_not_onnx, "cannot load the model"),
        (_png_renamed, "cannot load the model"),
        (_folder, "folder"),
    ],
    ids=["missing", "empty", "lfs-pointer", "not-onnx", "png-renamed", "folder"],
)
def test_unusable_model_files_raise_model_error(tmp_path, make, message):
    path = make(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match=message) as caught:
        OnnxModel(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# --- refusals of real ONNX files with a wrong or missing contract -------------------------


def _variant(proto, tmp_path: Path, change) -> Path:
    onnx = pytest.importorskip("onnx")
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    change(copy)
    path = tmp_path / "variant.onnx"
    path.write_bytes(copy.SerializeToString())
    return path


def _set_meta(proto, key: str, value) -> None:
    for entry in proto.metadata_props:
        if entry.key == METADATA_PREFIX + key:
            entry.value = json.dumps(value)
            return
    raise AssertionError(key)


def _strip_metadata(proto) -> None:
    del proto.metadata_props[:]


def _four_class_names(proto) -> None:
    _set_meta(proto, "class_names", [*CLASSES, "Other"])


def _two_class_names(proto) -> None:
    _set_meta(proto, "class_names", CLASSES[:2])


def _contract_says_32px(proto) -> None:
    prep = json.loads(
        next(e.value for e in proto.metadata_props if e.key == METADATA_PREFIX + "preprocessing")
    )
    _set_meta(proto, "preprocessing", {**prep, "image_size": [32, 32]})


def _newer_schema(proto) -> None:
    _set_meta(proto, "schema_version", 99)


def _rename_input(proto) -> None:
    proto.graph.input[0].name = "pixels"
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[i] = "pixels"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_strip_metadata, "no btxrd metadata"),
        (_four_class_names, "outputs 3 classes but its metadata names 4"),
        (_two_class_names, "outputs 3 classes but its metadata names 2"),
        (_contract_says_32px, "disagrees with the preprocessing contract"),
        (_newer_schema, "newer"),
        (_rename_input, "expected input 'image'"),
    ],
    ids=["no-metadata", "more-names", "fewer-names", "input-size", "newer-schema", "input-name"],
)
def test_onnx_files_breaking_the_contract_raise_model_error(
    tiny_model_proto, tmp_path, change, message
):
    path = _variant(tiny_model_proto, tmp_path, change)
    with pytest.raises(ModelError, match=message) as caught:
        OnnxModel(path)
    assert str(path) in str(caught.value)


def test_truncated_onnx_file_raises_model_error(tiny_onnx, tmp_path):
    data = tiny_onnx.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="cannot load the model"):
        OnnxModel(path)
