"""Open an exported btxrd ONNX file with onnxruntime and check it against its own contract."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from btxrd.runtime.decode.image import LFS_POINTER_PREFIX
from btxrd.runtime.errors import ModelError
from btxrd.runtime.model.contract import (
    CAM_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    TENSOR_MEANINGS,
    ModelMetadata,
    Trust,
)
from btxrd.runtime.model.onnxheader import HeaderError, OnnxHeader, read_header
from btxrd.runtime.model.verdict import refusal_explanation


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as onnxruntime reports it: name, element type (``float32``)
    and shape, a symbolic dimension (the batch) as its name."""

    name: str
    type: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "shape": list(self.shape),
            "meaning": TENSOR_MEANINGS.get(self.name, "not part of btxrd's contract"),
        }


@dataclass(frozen=True)
class ModelInfo:
    """A model's identity, as recorded with every result, and its graph's signature."""

    path: Path
    sha256: str
    metadata: ModelMetadata
    has_cam: bool
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    @property
    def trust(self) -> Trust | None:
        """Calibration and the out-of-distribution gate, or None (exported without them)."""
        return self.metadata.trust

    def identity(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "arch": self.metadata.arch,
            "class_names": list(self.class_names),
            "schema_version": self.metadata.schema_version,
        }

    def document(self) -> dict[str, Any]:
        """What the model says about itself (``btxrd-run --info``, ``GET /api/model``)."""
        meta = self.metadata
        return {
            **self.identity(),
            "path": str(self.path),
            "model": {"name": meta.name, "version": meta.version},
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "has_cam": self.has_cam,
            "cam": None if meta.cam is None else meta.cam.to_json(),
            "preprocessing": meta.preprocessing.to_json(),
            "trust": _trust_summary(meta.trust),
            "provenance": dict(meta.provenance),
            "intended_use": meta.intended_use,
            # What a refusal means, in the words the page shows a clinician (null: no gate).
            "refusal_explanation": (
                None if meta.trust is None else refusal_explanation(demo=meta.is_demo)
            ),
        }


def _trust_summary(trust: Trust | None) -> dict[str, Any]:
    """Calibration and the gate, absent ones included."""
    if trust is None:
        return {
            "calibration": "absent: scores are the raw softmax",
            "ood_gate": "absent: every image gets a class, radiograph or not",
        }
    return {"calibration": trust.calibration.to_json(), "ood_gate": trust.ood.to_json()}


@dataclass(frozen=True)
class ModelOutputs:
    """One batch through the graph: raw ``logits`` (N, C); with trust metadata, the calibrated
    ``probabilities`` (N, C) and the ``ood_score`` (N,); with ``with_cam``, ``cam`` (N, C, h, w)."""

    logits: np.ndarray
    probabilities: np.ndarray | None = None
    ood_score: np.ndarray | None = None
    cam: np.ndarray | None = None


class OnnxModel:
    """An onnxruntime session plus the metadata that makes its outputs meaningful."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        data = _read_model_bytes(self.path)
        # Hashing the file (about 30 ms for the demo model) runs beside the session's graph
        # optimisation instead of after it: hashlib lets go of the GIL while it hashes.
        with ThreadPoolExecutor(1, thread_name_prefix="btxrd-sha256") as pool:
            digest = pool.submit(lambda: hashlib.sha256(data).hexdigest())
            header = _read_header(data, self.path)
            self.session = _open_session(data, self.path, threads, header)
        raw_meta = self.session.get_modelmeta().custom_metadata_map
        metadata = ModelMetadata.from_metadata_props(raw_meta, str(self.path))
        outputs = tuple(_spec(o) for o in self.session.get_outputs())
        self.info = ModelInfo(
            path=self.path,
            sha256=digest.result(),
            metadata=metadata,
            has_cam=any(o.name == CAM_NAME for o in outputs),
            inputs=tuple(_spec(i) for i in self.session.get_inputs()),
            outputs=outputs,
        )
        self.fixed_batch = _check_signature(self.session, metadata, self.path)

    def run(self, batch: np.ndarray, with_cam: bool = False) -> ModelOutputs:
        """Every output the caller needs for ``batch`` (N, 3, H, W)."""
        if self.fixed_batch is not None and len(batch) != self.fixed_batch:
            # A model exported with a static batch size takes exactly that many images a call.
            parts = [self.run(part, with_cam) for part in _chunks(batch, self.fixed_batch)]
            return _joined(parts, len(batch))
        names = [LOGITS_NAME]
        if self.info.trust is not None:
            names += [PROBABILITIES_NAME, OOD_SCORE_NAME]
        if with_cam and self.info.has_cam:
            names.append(CAM_NAME)
        values = dict(zip(names, self.session.run(names, {INPUT_NAME: batch}), strict=True))
        return ModelOutputs(
            logits=values[LOGITS_NAME],
            probabilities=values.get(PROBABILITIES_NAME),
            ood_score=None if OOD_SCORE_NAME not in values else values[OOD_SCORE_NAME].reshape(-1),
            cam=values.get(CAM_NAME),
        )


def _spec(value: Any) -> TensorSpec:
    # onnxruntime says "tensor(float)"; numpy's name for it is what integrators look for.
    element = value.type.removeprefix("tensor(").removesuffix(")")
    element = {"float": "float32", "double": "float64", "float16": "float16"}.get(element, element)
    shape = tuple(d if isinstance(d, int) else str(d or "?") for d in value.shape)
    return TensorSpec(value.name, element, shape)


def _joined(parts: list[ModelOutputs], rows: int) -> ModelOutputs:
    """The outputs of consecutive parts as one batch of ``rows`` (the padding dropped)."""
    joined: dict[str, Any] = {}
    for name in ("logits", "probabilities", "ood_score", "cam"):
        values = [getattr(part, name) for part in parts]
        joined[name] = None if values[0] is None else np.concatenate(values)[:rows]
    return ModelOutputs(**joined)


def _chunks(batch: np.ndarray, size: int) -> list[np.ndarray]:
    """``batch`` in parts of exactly ``size`` images, the last padded by repeating its first
    image; ``run`` drops the padding's outputs by keeping only ``len(batch)`` rows."""
    parts = []
    for start in range(0, len(batch), size):
        part = batch[start : start + size]
        if len(part) < size:
            part = np.concatenate([part, np.repeat(part[:1], size - len(part), axis=0)])
        parts.append(part)
    return parts


def _read_model_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"{path}: model file not found; pass --model or set BTXRD_MODEL")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not an ONNX model file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror})") from None
    if not data:
        raise ModelError(f"{path}: model file is empty (0 bytes); export it again")
    if data.startswith(LFS_POINTER_PREFIX):
        raise ModelError(f"{path}: is a git-LFS pointer, not the model; run `git lfs pull`")
    return data


def _read_header(data: bytes, path: Path) -> OnnxHeader | None:
    try:
        header = read_header(data)
    except HeaderError:
        return None  # not protobuf at all: onnxruntime's own message says so
    if header.external_tensors:
        first = header.external_tensors[0]
        raise ModelError(
            f"{path}: keeps {len(header.external_tensors)} weight tensor(s) in external data "
            f"files (first: {first!r}); btxrd loads single-file models only, so nothing is "
            "read from beside it: export it again with btxrd-export"
        )
    return header


def session_options(threads: int | None) -> ort.SessionOptions:
    """The runtime's onnxruntime session settings (``threads`` intra-op threads, default every
    core); ``bench/`` measures its alternatives against exactly these."""
    options = ort.SessionOptions()
    # onnxruntime ignores OMP_NUM_THREADS: threads are set here or default to every core.
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern pre-plans one arena block per input shape: about 60 MB more peak RSS
    # at batch 8 for no measured speed-up (bench/: model and memory sections).
    options.enable_mem_pattern = False
    # Idle intra-op threads spin for ~30 ms after each run, on the cores the decode threads
    # need between batches (bench/: folder section, "predict_many, allow_spinning 0").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _open_session(
    data: bytes, path: Path, threads: int | None, header: OnnxHeader | None
) -> ort.InferenceSession:
    options = session_options(threads)
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped pybind exceptions here
        # Both sides of a version mismatch: what the file declares, what is installed.
        declared = f"{header.describe()}; " if header and header.ir_version else ""
        raise ModelError(
            f"{path}: onnxruntime {ort.__version__} cannot load the model ({declared}"
            f"{_first_line(exc)})"
        ) from None


def _check_signature(session: ort.InferenceSession, meta: ModelMetadata, path: Path) -> int | None:
    """Check the graph against the contract; return its static batch size, if it has one."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if INPUT_NAME not in inputs or LOGITS_NAME not in outputs:
        raise ModelError(
            f"{path}: expected input {INPUT_NAME!r} and output {LOGITS_NAME!r}, found "
            f"{sorted(inputs)} -> {sorted(outputs)}; export it with btxrd-export"
        )
    image = inputs[INPUT_NAME]
    shape = image.shape
    height, width = meta.preprocessing.image_size
    if len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (height, width):
        raise ModelError(
            f"{path}: input shape {shape} disagrees with the preprocessing contract "
            f"(3 x {height} x {width})"
        )
    if image.type != "tensor(float)":
        raise ModelError(f"{path}: input {INPUT_NAME!r} is {image.type}, expected tensor(float)")
    logits = outputs[LOGITS_NAME]
    # Integer or boolean "logits" would softmax to 1/C for every class: refuse them here.
    if logits.type not in _FLOAT_TENSORS or len(logits.shape) != 2:
        raise ModelError(
            f"{path}: output {LOGITS_NAME!r} is a {len(logits.shape)}-d {logits.type}; btxrd "
            "needs N x C floating-point scores. Export it with btxrd-export"
        )
    classes = logits.shape[-1]
    if isinstance(classes, int) and classes != len(meta.class_names):
        raise ModelError(
            f"{path}: the model outputs {classes} classes but its metadata names "
            f"{len(meta.class_names)}: {list(meta.class_names)}"
        )
    cam = outputs.get(CAM_NAME)
    if cam is not None and (cam.type not in _FLOAT_TENSORS or len(cam.shape) != 4):
        raise ModelError(
            f"{path}: output {CAM_NAME!r} is a {len(cam.shape)}-d {cam.type}; expected "
            "N x C x h x w floating-point maps"
        )
    if meta.trust is not None:
        # The metadata promises a calibrated, gated model: its two outputs must be there.
        wanted = {PROBABILITIES_NAME: (2,), OOD_SCORE_NAME: (1, 2)}
        for name, ranks in wanted.items():
            output = outputs.get(name)
            if (
                output is None
                or output.type not in _FLOAT_TENSORS
                or len(output.shape) not in ranks
            ):
                found = "missing" if output is None else f"a {len(output.shape)}-d {output.type}"
                raise ModelError(
                    f"{path}: its trust metadata needs a floating-point output {name!r}, which is "
                    f"{found}; export the model again with btxrd-export"
                )
    batch = shape[0]
    return batch if isinstance(batch, int) and batch > 0 else None


_FLOAT_TENSORS = ("tensor(float)", "tensor(double)", "tensor(float16)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
