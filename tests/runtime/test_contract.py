"""The model contract: metadata survives a round trip as JSON; anything off is refused."""

from __future__ import annotations

import json

import pytest

from btxrd.runtime.contract import (
    METADATA_PREFIX,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    ModelMetadata,
    Preprocessing,
)
from btxrd.runtime.errors import ModelError

METADATA = ModelMetadata(
    class_names=("Normal", "Benign", "Malignant"),
    preprocessing=Preprocessing(image_size=(256, 192), resize="bicubic", mean=(0.5, 0.4, 0.3)),
    arch="resnet18",
    provenance={"checkpoint_sha256": "ab" * 32, "epoch": 7, "demo_model": True},
    intended_use='Research use only; ünïcode and "quotes" survive.',
    reference_scores={"tolerance": 1e-4, "images": {"bar": [0.1, 0.2, 0.7]}},
)


def _props(**overrides: str) -> dict[str, str]:
    props = METADATA.to_metadata_props()
    for key, value in overrides.items():
        props[METADATA_PREFIX + key] = value
    return props


def test_round_trip_gives_back_equal_metadata():
    props = METADATA.to_metadata_props()
    assert ModelMetadata.from_metadata_props(props, "m.onnx") == METADATA


def test_every_value_is_json_and_every_key_is_prefixed():
    props = METADATA.to_metadata_props()
    assert all(isinstance(v, str) for v in props.values())
    decoded = {k: json.loads(v) for k, v in props.items()}
    assert all(k.startswith(METADATA_PREFIX) for k in decoded)
    assert decoded[METADATA_PREFIX + "class_names"] == ["Normal", "Benign", "Malignant"]
    assert decoded[METADATA_PREFIX + "schema_version"] == SCHEMA_VERSION
    assert decoded[METADATA_PREFIX + "preprocessing"]["image_size"] == [256, 192]
    assert decoded[METADATA_PREFIX + "preprocessing"]["resize"] == "bicubic"


def test_foreign_metadata_keys_are_ignored():
    props = {**METADATA.to_metadata_props(), "producer_note": "not JSON {", "other.key": "x"}
    assert ModelMetadata.from_metadata_props(props, "m.onnx") == METADATA


def test_optional_keys_fall_back_to_defaults():
    full = METADATA.to_metadata_props()
    props = {METADATA_PREFIX + k: full[METADATA_PREFIX + k] for k in REQUIRED_KEYS}
    meta = ModelMetadata.from_metadata_props(props, "m.onnx")
    assert meta.class_names == METADATA.class_names
    assert meta.provenance == {}
    assert meta.reference_scores == {}
    assert "not for clinical use" in meta.intended_use


@pytest.mark.parametrize("missing", REQUIRED_KEYS)
def test_missing_required_key_is_refused(missing):
    props = _props()
    del props[METADATA_PREFIX + missing]
    with pytest.raises(ModelError, match="no btxrd metadata") as caught:
        ModelMetadata.from_metadata_props(props, "model.onnx")
    assert missing in str(caught.value)
    assert "model.onnx" in str(caught.value)


def test_model_without_any_btxrd_metadata_is_refused():
    with pytest.raises(ModelError, match="btxrd-export"):
        ModelMetadata.from_metadata_props({}, "plain.onnx")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"class_names": "('Normal', 'Benign')"}, "not valid JSON"),
        ({"class_names": "Normal,Benign,Malignant"}, "not valid JSON"),
        ({"class_names": '"Normal"'}, "list of non-empty strings"),
        ({"class_names": "[]"}, "list of non-empty strings"),
        ({"class_names": '["Normal", ""]'}, "list of non-empty strings"),
        ({"class_names": '["Normal", 2]'}, "list of non-empty strings"),
        ({"class_names": '["Normal", "Benign", "Normal"]'}, "duplicates"),
        ({"schema_version": str(SCHEMA_VERSION + 1)}, "newer"),
        ({"schema_version": '"1"'}, "schema version"),
        ({"preprocessing": "[224, 224]"}, "JSON object"),
        ({"provenance": "{not json"}, "not valid JSON"),
    ],
    ids=[
        "python-tuple-repr",
        "comma-separated",
        "string-not-list",
        "empty-list",
        "empty-name",
        "non-string-name",
        "duplicate-names",
        "newer-schema",
        "schema-as-string",
        "preprocessing-not-object",
        "provenance-bad-json",
    ],
)
def test_bad_metadata_is_refused(overrides, message):
    with pytest.raises(ModelError, match=message) as caught:
        ModelMetadata.from_metadata_props(_props(**overrides), "bad.onnx")
    assert "bad.onnx" in str(caught.value)


GOOD_PREP = Preprocessing().to_json()

_BAD_PREPROCESSING = [
    ({"image_size": [4, 224]}, "out of range"),
    ({"image_size": [224, 5000]}, "out of range"),
    ({"image_size": 224}, "invalid"),
    ({"image_size": [224, 224, 3]}, "two integers"),
    ({"resize": "area"}, "resize"),
    ({"mean": [0.5, 0.5]}, "mean/std"),
    ({"std": [0.2, 0.0, 0.2]}, "mean/std"),
    ({"std": [0.2, -1.0, 0.2]}, "mean/std"),
    ({"channels": "BGR"}, "RGB, NCHW"),
    ({"layout": "NHWC"}, "RGB, NCHW"),
    ({"keep_aspect": True}, "RGB, NCHW"),
    ({"alpha": "flatten_white"}, "alpha"),
    ({"high_bit_depth": "clip"}, "high_bit_depth"),
    ({"crop": 0.875}, "unknown keys"),
]
_BAD_PREPROCESSING_IDS = [
    "size-too-small",
    "size-too-large",
    "size-not-pair",
    "size-three-numbers",
    "unknown-filter",
    "two-means",
    "zero-std",
    "negative-std",
    "bgr",
    "nhwc",
    "keep-aspect",
    "unknown-alpha",
    "unknown-bit-depth",
    "unknown-key",
]
_BAD_PREPROCESSING_MORE = [
    pytest.param(
        {"mean": ["a", "b", "c"]},
        "mean",
        id="non-numeric-mean",
    ),
    pytest.param(
        {"pixel_max": 0},
        "pixel_max",
        id="zero-pixel-max",
    ),
    pytest.param(
        {"image_size": [64.5, 64]},
        "image_size",
        id="fractional-size",
    ),
    pytest.param(
        {"exif_transpose": False},
        "exif",
        id="exif-transpose-off",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        *(
            pytest.param(c, m, id=i)
            for (c, m), i in zip(_BAD_PREPROCESSING, _BAD_PREPROCESSING_IDS, strict=True)
        ),
        *_BAD_PREPROCESSING_MORE,
    ],
)
def test_bad_preprocessing_is_refused(change, message):
    props = _props(preprocessing=json.dumps({**GOOD_PREP, **change}))
    with pytest.raises(ModelError, match=message):
        ModelMetadata.from_metadata_props(props, "bad.onnx")
