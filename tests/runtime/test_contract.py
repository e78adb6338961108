"""The model contract: metadata survives a round trip as JSON; anything off is refused."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from btxrd.runtime.errors import ModelError
from btxrd.runtime.model.contract import (
    CAM_NAME,
    INPUT_NAME,
    KEY_TRUST,
    LOGITS_NAME,
    METADATA_PREFIX,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    Calibration,
    FittedOn,
    ModelMetadata,
    OodGate,
    Preprocessing,
    Trust,
)

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


# The trust part: calibration and the out-of-distribution gate (optional key btxrd.trust).
TRUST = Trust(
    calibration=Calibration(
        temperature=1.7,
        fitted_on=FittedOn(
            data="synthetic",
            split="val",
            num_images=749,
            split_file="btxrd-demo.split.json",
            split_sha256="cd" * 32,
        ),
        metrics={
            "split": "test",
            "num_images": 749,
            "ece_bins": 15,
            "before": {"nll": 0.2, "brier": 0.07, "ece": 0.03},
            "after": {"nll": 0.15, "brier": 0.06, "ece": 0.01},
        },
    ),
    ood=OodGate(
        method="mahalanobis",
        threshold=41.5,
        retention=0.99,
        fitted_on=FittedOn(data="synthetic", split="train", num_images=3502),
        threshold_set_on=FittedOn(data="synthetic", split="val", num_images=749),
        details={"covariance": "ledoit_wolf_tied", "components": 1280},
    ),
)
WITH_TRUST = replace(METADATA, trust=TRUST)


def test_trust_round_trips_through_metadata_props():
    props = WITH_TRUST.to_metadata_props()
    assert set(json.loads(props[METADATA_PREFIX + KEY_TRUST])) == {"calibration", "ood"}
    assert ModelMetadata.from_metadata_props(props, "m.onnx") == WITH_TRUST
    assert Trust.from_json(json.loads(json.dumps(TRUST.to_json()))) == TRUST


def test_a_file_without_trust_still_loads_with_the_same_schema_version():
    props = METADATA.to_metadata_props()
    assert METADATA_PREFIX + KEY_TRUST not in props
    meta = ModelMetadata.from_metadata_props(props, "old.onnx")
    assert meta.trust is None
    assert json.loads(WITH_TRUST.to_metadata_props()[METADATA_PREFIX + "schema_version"]) == 1


def test_output_names_are_distinct():
    names = {INPUT_NAME, LOGITS_NAME, CAM_NAME, PROBABILITIES_NAME, OOD_SCORE_NAME}
    assert len(names) == 5
    assert (PROBABILITIES_NAME, OOD_SCORE_NAME) == ("probabilities", "ood_score")


def test_the_gate_refuses_above_the_threshold_and_non_finite_scores():
    gate = TRUST.ood
    assert not gate.is_out_of_distribution(41.5)
    assert gate.is_out_of_distribution(41.6)
    assert gate.is_out_of_distribution(float("nan"))
    assert gate.is_out_of_distribution(float("inf"))


def _trust_with(path: str, value) -> str:
    data = TRUST.to_json()
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    # json.dumps writes NaN and Infinity, which json.loads reads back: the check must see them.
    return json.dumps(data)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("calibration.temperature", 0, "temperature"),
        ("calibration.temperature", -1.2, "temperature"),
        ("calibration.temperature", float("nan"), "finite"),
        ("calibration.temperature", float("inf"), "finite"),
        ("calibration.temperature", "1.5", "finite"),
        ("calibration.temperature", True, "finite"),
        ("calibration.method", "platt", "not one of"),
        ("calibration.metrics.after.ece", float("nan"), "finite"),
        ("calibration.metrics.before.nll", -0.1, ">= 0"),
        ("calibration.fitted_on.num_images", 0, "num_images"),
        ("calibration.fitted_on.num_images", 3.5, "num_images"),
        ("calibration.fitted_on", _DELETE, "lacks fitted_on"),
        ("ood.method", "odin", "not one of"),
        ("ood.direction", "lower_is_ood", "direction"),
        ("ood.threshold", float("nan"), "finite"),
        ("ood.threshold", float("-inf"), "finite"),
        ("ood.threshold", None, "finite"),
        ("ood.retention", 0, r"\(0, 1\]"),
        ("ood.retention", 1.5, r"\(0, 1\]"),
        ("ood.threshold", _DELETE, "lacks threshold"),
        ("ood.extra", 1, "unknown keys"),
        ("ood.details", [1], "JSON object"),
        ("ood", _DELETE, "lacks ood"),
    ],
    ids=[
        "zero-temperature",
        "negative-temperature",
        "nan-temperature",
        "infinite-temperature",
        "string-temperature",
        "bool-temperature",
        "unknown-calibration-method",
        "nan-metric",
        "negative-metric",
        "no-images",
        "fractional-images",
        "no-fitted-on",
        "unknown-ood-method",
        "wrong-direction",
        "nan-threshold",
        "infinite-threshold",
        "null-threshold",
        "zero-retention",
        "retention-above-one",
        "no-threshold",
        "unknown-ood-key",
        "details-not-object",
        "no-ood",
    ],
)
def test_bad_trust_is_refused(path, value, message):
    props = _props(trust=_trust_with(path, value))
    with pytest.raises(ModelError, match=message) as caught:
        ModelMetadata.from_metadata_props(props, "bad.onnx")
    assert "bad.onnx" in str(caught.value)


@pytest.mark.parametrize("text", ["[]", '"trust"', "1"], ids=["list", "string", "number"])
def test_trust_that_is_not_an_object_is_refused(text):
    with pytest.raises(ModelError, match="trust"):
        ModelMetadata.from_metadata_props(_props(trust=text), "bad.onnx")
