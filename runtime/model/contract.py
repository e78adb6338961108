"""The model contract: the one place that says what an exported btxrd ONNX file carries.

Export writes it, the runtime reads it. Every value in ``metadata_props`` is JSON, read back
with ``json.loads`` (never ``eval``), so class names and the preprocessing survive any tool.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from btxrd.runtime.errors import ModelError

SCHEMA_VERSION = 1
METADATA_PREFIX = "btxrd."

# Graph input/output names.
INPUT_NAME = "image"
LOGITS_NAME = "logits"
CAM_NAME = "cam"
# Present exactly when the file carries ``trust`` metadata (see ``Trust``):
PROBABILITIES_NAME = "probabilities"  # N x C, softmax(logits / temperature)
OOD_SCORE_NAME = "ood_score"  # N, higher = more unlike the training data

# What each graph input and output means: written into the file (each value's doc_string and
# the model's description) and printed by ``btxrd-run --info``, for whoever integrates the file
# without btxrd (C++, C#, another runtime).
TENSOR_MEANINGS = {
    INPUT_NAME: "the preprocessed radiograph (btxrd.preprocessing), N x 3 x H x W float32: RGB "
    "resized to H x W, scaled to [0, 1], then mean/std normalised",
    LOGITS_NAME: "raw class scores, N x C, in the order of btxrd.class_names; their softmax "
    "is uncalibrated",
    CAM_NAME: "Grad-CAM of every class on the last feature map, N x C x h x w, ReLU applied, "
    "not normalised or resized; upsample to the input size to overlay",
    PROBABILITIES_NAME: "calibrated class probabilities, N x C: softmax(logits / temperature), "
    "the temperature in btxrd.trust",
    OOD_SCORE_NAME: "out-of-distribution score, N: above btxrd.trust's ood threshold the image "
    "is unlike the data the model was fitted on and gets no class",
}

# Metadata keys (each stored as METADATA_PREFIX + key, each value JSON).
KEY_SCHEMA = "schema_version"
KEY_CLASSES = "class_names"
KEY_PREPROCESS = "preprocessing"
KEY_ARCH = "arch"
KEY_PROVENANCE = "provenance"
KEY_INTENDED_USE = "intended_use"
KEY_REFERENCE = "reference_scores"
KEY_TRUST = "trust"  # optional: calibration and the out-of-distribution gate (``Trust``)
KEY_MODEL = "model"  # optional: {"name": ..., "version": ...} (files of 2026-12-07 on)
KEY_CAM = "cam"  # optional: how the cam output is made, or why there is none (``CamSource``)
REQUIRED_KEYS = (KEY_SCHEMA, KEY_CLASSES, KEY_PREPROCESS, KEY_ARCH)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEMO_INTENDED_USE = (
    "DEMO MODEL trained on synthetic radiograph phantoms only. Research and software testing; "
    "not for clinical use, not a medical device, never a basis for diagnosis or treatment."
)
DEFAULT_INTENDED_USE = (
    "Research use only; not for clinical use. Not a medical device; outputs are not a diagnosis."
)


def intended_use_for(demo: bool) -> str:
    """The intended-use statement a model carries unless its exporter wrote another: the demo
    model's, or research use only."""
    return DEMO_INTENDED_USE if demo else DEFAULT_INTENDED_USE


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the model's input tensor. Runtime, export parity and explain
    all follow this one description (see ``btxrd.runtime.model.preprocess``)."""

    image_size: tuple[int, int] = (224, 224)  # (height, width) of the network input
    resize: str = "bilinear"  # Pillow filter; Pillow always antialiases when shrinking
    keep_aspect: bool = False  # the predecessor stretched to a square; so do we
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: str = "RGB"  # grayscale is replicated to three channels
    layout: str = "NCHW"
    pixel_max: float = 255.0  # 8-bit values divided by this to [0, 1] before mean/std
    high_bit_depth: str = "minmax"  # 16-bit/float data: scaled by its real min..max to 8 bits
    exif_transpose: bool = True  # EXIF orientation applied before anything else
    alpha: str = "flatten_black"  # transparency composited onto black (air on a radiograph)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preprocessing:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"preprocessing contract has unknown keys {unknown}; upgrade btxrd")
        values = dict(data)
        for key in ("image_size", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        prep = cls(**values)
        prep.validate()
        return prep

    def validate(self) -> None:
        if len(self.image_size) != 2 or not all(_is_int(v) for v in self.image_size):
            raise ModelError(f"preprocessing image_size {self.image_size} must be two integers")
        if not all(_is_number(v) for v in (*self.mean, *self.std, self.pixel_max)):
            raise ModelError("preprocessing mean, std and pixel_max must be numbers")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std, self.pixel_max)):
            raise ModelError(
                f"preprocessing mean {list(self.mean)}, std {list(self.std)} and pixel_max "
                f"{self.pixel_max} must be finite numbers"
            )
        if self.pixel_max <= 0:
            raise ModelError(f"preprocessing pixel_max must be > 0, got {self.pixel_max}")
        if self.exif_transpose is not True:
            raise ModelError("this btxrd always applies EXIF orientation (exif_transpose: true)")
        height, width = self.image_size
        if not (8 <= height <= 4096 and 8 <= width <= 4096):
            raise ModelError(f"preprocessing image_size {self.image_size} is out of range")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError("preprocessing mean/std must be three numbers, std > 0")
        # Pixels are scaled to [0, 1] first, so a mean outside it or a tiny or huge std can only
        # come from a corrupt or mistyped contract (ImageNet's are 0.4 and 0.2).
        if not all(0.0 <= m <= 1.0 for m in self.mean) or not all(
            STD_RANGE[0] <= v <= STD_RANGE[1] for v in self.std
        ):
            raise ModelError(
                f"preprocessing mean {list(self.mean)} / std {list(self.std)} are implausible "
                f"(mean within [0, 1], std within [{STD_RANGE[0]:g}, {STD_RANGE[1]:g}] of pixels "
                "scaled to [0, 1]); export the model again"
            )
        for name in ("resize", "channels", "layout", "alpha", "high_bit_depth"):
            if not isinstance(getattr(self, name), str):
                raise ModelError(f"preprocessing {name} must be a string")
        if not isinstance(self.keep_aspect, bool):
            raise ModelError("preprocessing keep_aspect must be true or false")
        if self.resize not in RESIZE_FILTERS:
            raise ModelError(f"preprocessing resize {self.resize!r} is not one of {RESIZE_FILTERS}")
        if self.channels != "RGB" or self.layout != "NCHW" or self.keep_aspect:
            raise ModelError("this btxrd supports RGB, NCHW, stretched-resize models only")
        if self.alpha != "flatten_black":
            raise ModelError(f"unknown alpha handling {self.alpha!r}")
        if self.high_bit_depth != "minmax":
            raise ModelError(f"unknown high_bit_depth scaling {self.high_bit_depth!r}")


RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
STD_RANGE = (1e-3, 10.0)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CALIBRATION_METHODS = ("temperature",)
# Out-of-distribution scores export can put in the graph (``btxrd.export.trust``): class-
# conditional Mahalanobis distance (Lee et al. 2018) on the pooled features after every stage,
# standardised and combined, or on the last feature map only; 1 - max softmax probability
# (Hendrycks & Gimpel 2017); energy -logsumexp(logits) (Liu et al. 2020); the negated feature
# norm. Each is oriented so that higher means more unlike the training data.
OOD_METHODS = ("mahalanobis_multilayer", "mahalanobis", "msp", "energy", "feature_norm")
OOD_DIRECTION = "higher_is_ood"
CALIBRATION_METRICS = ("nll", "brier", "ece")


@dataclass(frozen=True)
class FittedOn:
    """The data a trust figure was fitted or set on: the dataset folder's name (never its path),
    the split file's name and sha256 (None when the split was made at export), which part of
    it, and how many images."""

    data: str
    split: str
    num_images: int
    split_file: str | None = None
    split_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str) -> FittedOn:
        values = _object(data, where, required=("data", "split", "num_images"))
        values = _only(values, cls, where)
        fitted = cls(**values)
        for name in ("data", "split"):
            if not isinstance(getattr(fitted, name), str):
                raise ModelError(f"trust {where}.{name} must be a string")
        for name in ("split_file", "split_sha256"):
            if getattr(fitted, name) is not None and not isinstance(getattr(fitted, name), str):
                raise ModelError(f"trust {where}.{name} must be a string or null")
        if not _is_int(fitted.num_images) or fitted.num_images < 1:
            raise ModelError(f"trust {where}.num_images must be a whole number >= 1")
        return fitted


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling (Guo et al. 2017): ``probabilities = softmax(logits / temperature)``.

    ``metrics`` holds ``split``, ``num_images``, ``ece_bins`` and ``before`` / ``after``, each
    with ``nll``, ``brier`` and ``ece``, measured on data the fit did not see."""

    temperature: float
    fitted_on: FittedOn
    metrics: Mapping[str, Any] = field(default_factory=dict)
    method: str = "temperature"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "fitted_on": self.fitted_on.to_json(),
            "metrics": copy.deepcopy(dict(self.metrics)),
        }

    @classmethod
    def from_json(cls, data: Any) -> Calibration:
        values = _object(data, "calibration", required=("method", "temperature", "fitted_on"))
        values = _only(values, cls, "calibration")
        method = values["method"]
        if method not in CALIBRATION_METHODS:
            raise ModelError(
                f"trust calibration method {method!r} is not one of {CALIBRATION_METHODS}; "
                "upgrade btxrd"
            )
        temperature = _finite(values["temperature"], "calibration.temperature")
        if not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
            raise ModelError(
                f"trust calibration.temperature {temperature:g} must be within "
                f"[{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}] (and > 0)"
            )
        metrics = values.get("metrics") or {}
        _check_calibration_metrics(metrics)
        return cls(
            temperature=temperature,
            fitted_on=FittedOn.from_json(values["fitted_on"], "calibration.fitted_on"),
            metrics=metrics,
            method=method,
        )


@dataclass(frozen=True)
class OodGate:
    """The out-of-distribution gate: an input whose ``ood_score`` output is above
    ``threshold`` is unlike the data the model was fitted on. The threshold keeps
    ``retention`` of the in-distribution images of ``threshold_set_on``.

    ``details`` records how the score was built (feature, covariance, components)."""

    method: str
    threshold: float
    retention: float
    fitted_on: FittedOn
    threshold_set_on: FittedOn
    direction: str = OOD_DIRECTION
    details: Mapping[str, Any] = field(default_factory=dict)

    def is_out_of_distribution(self, score: float) -> bool:
        """True when ``score`` is above the threshold (or not a finite number)."""
        return not math.isfinite(score) or score > self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "direction": self.direction,
            "threshold": self.threshold,
            "retention": self.retention,
            "fitted_on": self.fitted_on.to_json(),
            "threshold_set_on": self.threshold_set_on.to_json(),
            "details": copy.deepcopy(dict(self.details)),
        }

    @classmethod
    def from_json(cls, data: Any) -> OodGate:
        required = ("method", "direction", "threshold", "retention", "fitted_on")
        values = _object(data, "ood", required=(*required, "threshold_set_on"))
        values = _only(values, cls, "ood")
        if values["method"] not in OOD_METHODS:
            raise ModelError(
                f"trust ood method {values['method']!r} is not one of {OOD_METHODS}; upgrade btxrd"
            )
        if values["direction"] != OOD_DIRECTION:
            raise ModelError(
                f"trust ood direction {values['direction']!r} is not {OOD_DIRECTION!r}"
            )
        retention = _finite(values["retention"], "ood.retention")
        if not 0.0 < retention <= 1.0:
            raise ModelError(f"trust ood.retention {retention:g} must be within (0, 1]")
        details = values.get("details") or {}
        if not isinstance(details, dict):
            raise ModelError("trust ood.details must be a JSON object")
        return cls(
            method=values["method"],
            threshold=_finite(values["threshold"], "ood.threshold"),
            retention=retention,
            fitted_on=FittedOn.from_json(values["fitted_on"], "ood.fitted_on"),
            threshold_set_on=FittedOn.from_json(values["threshold_set_on"], "ood.threshold_set_on"),
            direction=values["direction"],
            details=details,
        )


@dataclass(frozen=True)
class Trust:
    """What export fitted so that a score can be trusted: the calibration behind the
    ``probabilities`` output and the gate on the ``ood_score`` output (metadata key
    ``btxrd.trust``). A file that carries it has both outputs; one without it has neither."""

    calibration: Calibration
    ood: OodGate

    def to_json(self) -> dict[str, Any]:
        return {"calibration": self.calibration.to_json(), "ood": self.ood.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Trust:
        values = _object(data, "trust", required=("calibration", "ood"))
        values = _only(values, cls, "trust")
        return cls(
            calibration=Calibration.from_json(values["calibration"]),
            ood=OodGate.from_json(values["ood"]),
        )


TEMPERATURE_RANGE = (1e-3, 1e3)


def _object(data: Any, where: str, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelError(f"trust {where} must be a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise ModelError(f"trust {where} lacks {', '.join(missing)}; export the model again")
    return dict(data)


def _only(values: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ModelError(f"trust {where} has unknown keys {unknown}; upgrade btxrd")
    return values


def _finite(value: Any, where: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ModelError(f"trust {where} must be a finite number, got {value!r}")
    return float(value)


def _check_calibration_metrics(metrics: Any) -> None:
    if not isinstance(metrics, dict):
        raise ModelError("trust calibration.metrics must be a JSON object")
    for part in ("before", "after"):
        if part not in metrics:
            continue
        values = metrics[part]
        if not isinstance(values, dict):
            raise ModelError(f"trust calibration.metrics.{part} must be a JSON object")
        for name in CALIBRATION_METRICS:
            if name in values and _finite(values[name], f"calibration.metrics.{part}.{name}") < 0:
                raise ModelError(f"trust calibration.metrics.{part}.{name} must be >= 0")


CAM_KINDS = ("linear", "gradient", "none")


@dataclass(frozen=True)
class CamSource:
    """How the graph's ``cam`` output is Grad-CAM (metadata key ``btxrd.cam``): ``linear``, the
    closed form for a global-average-pool + linear head; ``gradient``, the head differentiated
    inside the graph; ``none``, no ``cam`` output (``reason`` says why; btxrd-explain still
    draws Grad-CAM with the checkpoint). ``target_layer`` names the layer in the checkpoint's
    network, ``grid`` its rows and columns, ``tokens`` whether they are a token model's."""

    kind: str
    target_layer: str
    grid: tuple[int, int]
    tokens: bool = False
    target_chosen: str = "found"  # or "given" (btxrd-export --target-layer)
    classifier: str = ""
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["grid"] = list(self.grid)
        return values

    @classmethod
    def from_json(cls, data: Any) -> CamSource:
        if not isinstance(data, dict):
            raise ModelError("metadata 'cam' must be a JSON object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ModelError(f"metadata 'cam' has unknown keys {unknown}; upgrade btxrd")
        kind, grid = data.get("kind"), data.get("grid")
        if kind not in CAM_KINDS:
            raise ModelError(f"metadata cam.kind {kind!r} is not one of {CAM_KINDS}")
        if not (isinstance(grid, list) and len(grid) == 2 and all(_is_int(v) for v in grid)):
            raise ModelError("metadata cam.grid must be two whole numbers")
        texts = ("target_layer", "target_chosen", "classifier", "reason")
        if not all(isinstance(data.get(k, ""), str) for k in texts):
            raise ModelError(f"metadata cam {', '.join(texts)} must be strings")
        if "target_layer" not in data:
            raise ModelError("metadata cam lacks target_layer")
        return cls(**{**data, "grid": (grid[0], grid[1]), "tokens": bool(data.get("tokens"))})


@dataclass(frozen=True)
class ModelMetadata:
    """Everything an exported model says about itself."""

    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    arch: str
    schema_version: int = SCHEMA_VERSION
    provenance: Mapping[str, Any] = field(default_factory=dict)
    intended_use: str = DEFAULT_INTENDED_USE
    # Probabilities export measured on named sample images, for ``btxrd-run --selftest``.
    reference_scores: Mapping[str, Any] = field(default_factory=dict)
    # Calibration and the out-of-distribution gate; None for a file exported without them.
    trust: Trust | None = None
    # What the exporter called the model and which version it is (None: not recorded).
    name: str | None = None
    version: str | None = None
    # How the ``cam`` output is made (None: not recorded, files before 2026-12-07).
    cam: CamSource | None = None

    @property
    def is_demo(self) -> bool:
        """The shipped demo model (trained on synthetic phantoms only), by its own statement."""
        return self.intended_use == DEMO_INTENDED_USE

    def to_metadata_props(self) -> dict[str, str]:
        values: dict[str, Any] = {
            KEY_SCHEMA: self.schema_version,
            KEY_CLASSES: list(self.class_names),
            KEY_PREPROCESS: self.preprocessing.to_json(),
            KEY_ARCH: self.arch,
            KEY_PROVENANCE: dict(self.provenance),
            KEY_INTENDED_USE: self.intended_use,
            KEY_REFERENCE: dict(self.reference_scores),
        }
        if self.trust is not None:
            values[KEY_TRUST] = self.trust.to_json()
        if self.name is not None:
            values[KEY_MODEL] = {"name": self.name, "version": self.version}
        if self.cam is not None:
            values[KEY_CAM] = self.cam.to_json()
        return {METADATA_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in values.items()}

    @classmethod
    def from_metadata_props(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Parse ``metadata_props`` (as onnxruntime's ``custom_metadata_map`` returns them)."""
        ours = {
            k[len(METADATA_PREFIX) :]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)
        }
        missing = [k for k in REQUIRED_KEYS if k not in ours]
        if missing:
            raise ModelError(
                f"{source}: no btxrd metadata ({', '.join(missing)} missing); "
                "export the checkpoint with btxrd-export"
            )
        parsed: dict[str, Any] = {}
        for key, text in ours.items():
            try:
                parsed[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ModelError(
                    f"{source}: metadata {key!r} is not valid JSON ({exc.msg})"
                ) from None
        version = parsed[KEY_SCHEMA]
        if not _is_int(version) or version < 1:
            raise ModelError(f"{source}: metadata schema version {version!r} is not a version")
        if version > SCHEMA_VERSION:
            raise ModelError(
                f"{source}: metadata schema version {version!r} is newer than this btxrd "
                f"understands ({SCHEMA_VERSION}); upgrade btxrd"
            )
        names = parsed[KEY_CLASSES]
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
            raise ModelError(f"{source}: class_names must be a JSON list of non-empty strings")
        if len(set(names)) != len(names):
            raise ModelError(f"{source}: class_names has duplicates: {names}")
        if not isinstance(parsed[KEY_PREPROCESS], dict):
            raise ModelError(f"{source}: preprocessing must be a JSON object")
        try:
            prep = Preprocessing.from_json(parsed[KEY_PREPROCESS])
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ModelError(f"{source}: preprocessing contract is invalid ({exc})") from None
        for key, kind in _VALUE_TYPES.items():
            if key in parsed and parsed[key] is not None and not isinstance(parsed[key], kind):
                raise ModelError(
                    f"{source}: metadata {key!r} must be a JSON {_JSON_NAMES[kind]}, got "
                    f"{type(parsed[key]).__name__}; export the model again"
                )
        trust = None
        if parsed.get(KEY_TRUST) is not None:
            try:
                trust = Trust.from_json(parsed[KEY_TRUST])
            except ModelError as exc:
                raise ModelError(f"{source}: {exc}") from None
        model_name, model_version = _name_and_version(parsed.get(KEY_MODEL), source)
        try:
            cam = CamSource.from_json(parsed[KEY_CAM]) if parsed.get(KEY_CAM) else None
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        return cls(
            class_names=tuple(names),
            preprocessing=prep,
            arch=parsed[KEY_ARCH],
            schema_version=version,
            provenance=parsed.get(KEY_PROVENANCE) or {},
            intended_use=parsed.get(KEY_INTENDED_USE) or DEFAULT_INTENDED_USE,
            reference_scores=parsed.get(KEY_REFERENCE) or {},
            trust=trust,
            name=model_name,
            version=model_version,
            cam=cam,
        )


def _name_and_version(value: Any, source: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) - {"name", "version"}:
        raise ModelError(f"{source}: metadata 'model' must be an object of name and version")
    name, version = value.get("name"), value.get("version")
    for key, text in (("name", name), ("version", version)):
        if text is not None and not (isinstance(text, str) and 0 < len(text) <= MAX_NAME_LENGTH):
            raise ModelError(
                f"{source}: metadata model.{key} must be a string of 1 to {MAX_NAME_LENGTH} "
                "characters or null"
            )
    return name, version


MAX_NAME_LENGTH = 200


# The JSON type of each metadata value besides class names and preprocessing, checked at load so
# an odd value is a one-line ModelError, not a failure later in --info or --selftest.
_VALUE_TYPES: dict[str, type] = {
    KEY_ARCH: str,
    KEY_PROVENANCE: dict,
    KEY_INTENDED_USE: str,
    KEY_REFERENCE: dict,
    KEY_TRUST: dict,
}
_JSON_NAMES: dict[type, str] = {str: "string", dict: "object"}
