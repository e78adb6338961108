"""Model files users were sent, through ``btxrd-run --model``: anything unusable stops the run
before an image is touched, with exit 3 and one line naming the file and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest
from PIL import Image
from reliability_support import assert_one_clear_line, run_cli

from btxrd.runtime.model.contract import METADATA_PREFIX


def _bytes(content: bytes) -> Callable[[Path, object], None]:
    def make(path: Path, _proto) -> None:
        path.write_bytes(content)

    return make


def _truncated(path: Path, proto) -> None:
    data = proto.SerializeToString()
    path.write_bytes(data[: len(data) // 3])


def _png(path: Path, _proto) -> None:
    Image.new("L", (32, 32)).save(path, format="PNG")


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 44000000\n"
)


def _edited(change: Callable) -> Callable[[Path, object], None]:
    """A real exported model with one thing changed."""

    def make(path: Path, proto) -> None:
        onnx = pytest.importorskip("onnx")
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        change(copy)
        path.write_bytes(copy.SerializeToString())

    return make


def _set_raw(proto, key: str, text: str) -> None:
    for entry in proto.metadata_props:
        if entry.key == METADATA_PREFIX + key:
            entry.value = text
            return
    raise AssertionError(key)


def _meta(proto, key: str) -> object:
    return json.loads(next(e.value for e in proto.metadata_props if e.key == METADATA_PREFIX + key))


def _no_metadata(proto) -> None:
    del proto.metadata_props[:]


def _names_not_json(proto) -> None:
    _set_raw(proto, "class_names", "['Normal', 'Benign', 'Malignant']")  # Python, not JSON


def _names_duplicated(proto) -> None:
    _set_raw(proto, "class_names", json.dumps(["Normal", "Benign", "Benign"]))


def _names_count(proto) -> None:
    _set_raw(proto, "class_names", json.dumps(["Normal", "Abnormal"]))


def _input_size(proto) -> None:
    _set_raw(
        proto,
        "preprocessing",
        json.dumps({**_meta(proto, "preprocessing"), "image_size": [32, 32]}),
    )


def _ir_newer(proto) -> None:
    proto.ir_version = 99


def _opset_newer(proto) -> None:
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99


def _preprocessing(**changes) -> Callable:
    def change(proto) -> None:
        _set_raw(proto, "preprocessing", json.dumps({**_meta(proto, "preprocessing"), **changes}))

    return change


def _raw(key: str, text: str) -> Callable:
    return lambda proto: _set_raw(proto, key, text)


def _logits_as(elem_type_name: str) -> Callable:
    """The graph's float logits cast to another type before they leave the graph."""

    def change(proto) -> None:
        onnx = pytest.importorskip("onnx")
        elem_type = getattr(onnx.TensorProto, elem_type_name)
        for node in proto.graph.node:
            node.output[:] = ["logits_float" if o == "logits" else o for o in node.output]
            node.input[:] = ["logits_float" if i == "logits" else i for i in node.input]
        proto.graph.node.append(
            onnx.helper.make_node("Cast", ["logits_float"], ["logits"], to=elem_type)
        )
        for output in proto.graph.output:
            if output.name == "logits":
                output.type.tensor_type.elem_type = elem_type

    return change


MODELS = [
    ("missing", None, "model file not found"),
    ("empty", _bytes(b""), "empty"),
    ("truncated", _truncated, "cannot load the model"),
    ("not-onnx", _bytes(b"PK\x03\x04 a zip of something else" * 20), "cannot load the model"),
    ("png-renamed", _png, "cannot load the model"),
    ("lfs-pointer", _bytes(LFS_POINTER), "git lfs pull"),
    ("no-metadata", _edited(_no_metadata), "no btxrd metadata"),
    ("class-names-not-json", _edited(_names_not_json), "not valid JSON"),
    ("class-names-duplicated", _edited(_names_duplicated), "duplicates"),
    ("class-count-disagrees", _edited(_names_count), "outputs 3 classes but its metadata names 2"),
    ("input-size-disagrees", _edited(_input_size), "disagrees with the preprocessing contract"),
    ("ir-newer", _edited(_ir_newer), "IR version 99"),
    ("opset-newer", _edited(_opset_newer), "opset 99"),
    ("std-infinity", _edited(_preprocessing(std=[float("inf")] * 3)), "finite"),
    ("std-nan", _edited(_preprocessing(std=[float("nan")] * 3)), "finite"),
    ("mean-on-the-0-255-scale", _edited(_preprocessing(mean=[124, 116, 104])), "implausible"),
    ("std-zero-ish", _edited(_preprocessing(std=[1e-9] * 3)), "implausible"),
    ("resize-not-a-string", _edited(_preprocessing(resize=["bilinear"])), "must be a string"),
    ("provenance-a-list", _edited(_raw("provenance", "[1, 2]")), "'provenance' must be"),
    ("reference-scores-a-string", _edited(_raw("reference_scores", '"x"')), "must be a JSON"),
    ("arch-a-number", _edited(_raw("arch", "7")), "'arch' must be a JSON string"),
    ("schema-version-a-string", _edited(_raw("schema_version", '"1"')), "is not a version"),
    ("integer-logits", _edited(_logits_as("INT64")), "floating-point scores"),
    ("boolean-logits", _edited(_logits_as("BOOL")), "floating-point scores"),
]


@pytest.mark.parametrize(("make", "cause"), [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_unusable_model_exits_3_before_any_image(
    tiny_model_proto, good_images, tmp_path, make, cause
):
    model = tmp_path / "sent.onnx"
    if make is not None:
        make(model, tiny_model_proto)
    out = tmp_path / "results.json"
    result = run_cli("--model", model, "--json", "--output", out, *good_images)
    assert result.exit_code == 3, result.stderr
    line = assert_one_clear_line(result.stderr, str(model), cause)
    assert result.stdout == "" and not out.exists()
    if cause.startswith(("IR", "opset")):
        assert f"onnxruntime {ort.__version__}" in line  # both versions, side by side


def test_model_with_external_data_is_refused_and_nothing_beside_it_is_read(
    tiny_model_proto, good_images, tmp_path
):
    onnx = pytest.importorskip("onnx")
    copy = onnx.ModelProto()
    copy.CopyFrom(tiny_model_proto)
    model = tmp_path / "split.onnx"
    onnx.save_model(
        copy, model, save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert (tmp_path / "weights.bin").exists()
    result = run_cli("--model", model, "--json", *good_images)
    assert result.exit_code == 3
    assert_one_clear_line(result.stderr, str(model), "external data", "single-file models only")


def test_model_with_a_static_batch_of_one_classifies_a_batch(
    tiny_model_proto, tiny_onnx, good_images, tmp_path
):
    """An export with a fixed batch dimension of 1: images go through one at a time, with the
    same scores as the dynamic-batch model."""
    onnx = pytest.importorskip("onnx")
    copy = onnx.ModelProto()
    copy.CopyFrom(tiny_model_proto)
    for value in (*copy.graph.input, *copy.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    static = tmp_path / "static.onnx"
    static.write_bytes(copy.SerializeToString())
    images = [*good_images, *good_images, *good_images]  # 6 images, in batches of 4
    results = [
        run_cli("--model", model, "--json", "--batch-size", 4, *images)
        for model in (static, tiny_onnx)
    ]
    for result in results:
        assert result.exit_code == 0, result.stderr
    static_scores, dynamic_scores = (
        [r["scores"] for r in json.loads(result.stdout)["results"]] for result in results
    )
    assert len(static_scores) == 6
    for a, b in zip(static_scores, dynamic_scores, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
