"""Checkpoint -> one self-describing ONNX file.

The graph has one input (``image``, dynamic batch) and two outputs: ``logits`` and ``cam``, the
per-class Grad-CAM maps; a model exported with trust (``btxrd.export.trust``) also has
``probabilities`` (softmax(logits / T)) and ``ood_score``, computed in the graph from the same
pooled features the head sees.

For a global-average-pool + linear head, Grad-CAM on the last feature map is
ReLU(sum_k W[c, k] * A_k) up to a positive scale, since d logit_c / d A_k = W[c, k] / (h * w); so
the maps are one einsum in the graph and the runtime needs no gradients. The ReLU comes after
the weighted sum: SiLU features can be negative.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from btxrd.export.archs import Arch
from btxrd.export.checkpoint import Checkpoint
from btxrd.export.trust.ood import OodScorer, TapFit
from btxrd.export.trust.taps import feature_maps
from btxrd.runtime.contract import (
    CAM_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    TENSOR_MEANINGS,
    ModelMetadata,
    Trust,
    intended_use_for,
)
from btxrd.runtime.errors import ModelError
from btxrd.runtime.install import btxrd_version

DEFAULT_OPSET = 18
# Output of the probe graph export fits trust with (the pooled taps); never in a shipped file.
FEATURES_NAME = "features"


class _TapDistance(nn.Module):
    """One tap's standardised Mahalanobis distance: its statistics folded into one whitening
    projection P (inverse square root of the shared covariance): z = (f - centre) P, the distance
    from z to the nearest class centre in z-space, then (distance - mean) / std."""

    def __init__(self, tap: TapFit) -> None:
        super().__init__()
        centre, projection, class_centres = tap.fit.whitening()
        for name, value in (
            ("centre", centre),
            ("projection", projection),
            ("class_centres", class_centres),
            ("mean", np.float64(tap.mean)),
            ("std", np.float64(tap.std)),
        ):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        z = (pooled - self.centre) @ self.projection
        squared = ((z[:, None, :] - self.class_centres[None]) ** 2).sum(dim=2)
        return (squared.min(dim=1).values.sqrt() - self.mean) / self.std


class TrustHead(nn.Module):
    """Calibrated probabilities and the out-of-distribution score, as graph operations, from the
    logits and the pooled taps (``btxrd.export.trust.taps``)."""

    def __init__(self, temperature: float, scorer: OodScorer) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.method = scorer.method
        self.combine = scorer.combine
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))
        self.taps = nn.ModuleList(_TapDistance(tap) for tap in scorer.taps)

    def forward(
        self, pooled: list[torch.Tensor], logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        if self.method in ("mahalanobis", "mahalanobis_multilayer"):
            used = pooled[-len(self.taps) :]
            per_tap = torch.stack([tap(p) for tap, p in zip(self.taps, used, strict=True)])
            score = per_tap.max(dim=0).values if self.combine == "max" else per_tap.sum(dim=0)
        elif self.method == "msp":
            score = 1.0 - torch.softmax(logits, dim=1).max(dim=1).values
        elif self.method == "energy":
            score = -torch.logsumexp(logits, dim=1)
        else:  # feature_norm
            score = -torch.linalg.vector_norm(pooled[-1], dim=1)
        return probabilities, score


class CamModel(nn.Module):
    """The classifier, re-wired to also return its class activation maps, and with ``trust``
    its calibrated probabilities and out-of-distribution score. ``probe`` returns the logits and
    the pooled taps, concatenated, instead (what export fits trust on)."""

    def __init__(
        self, model: nn.Module, arch: Arch, trust: TrustHead | None = None, probe: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self._arch = arch
        self.head = arch.head(model)
        self.trust = trust
        self.probe = probe

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.trust is None and not self.probe:
            maps = [self._arch.features(self.model, image)]
        else:
            maps = feature_maps(self.model, self._arch, image)
        fmap = maps[-1]
        pooled = [m.mean(dim=(2, 3)) for m in maps]
        logits = self.head(pooled[-1])
        if self.probe:
            return logits, torch.cat(pooled, dim=1)
        cam = torch.relu(torch.einsum("nkhw,ck->nchw", fmap, self.head.weight))
        if self.trust is None:
            return logits, cam
        return (logits, cam, *self.trust(pooled, logits))


def output_names(trust: bool, probe: bool = False) -> list[str]:
    """The graph's outputs, in order."""
    if probe:
        return [LOGITS_NAME, FEATURES_NAME]
    return [LOGITS_NAME, CAM_NAME, *((PROBABILITIES_NAME, OOD_SCORE_NAME) if trust else ())]


def export_model_proto(
    model: nn.Module,
    arch: Arch,
    image_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    trust: TrustHead | None = None,
    probe: bool = False,
) -> onnx.ModelProto:
    """Trace ``model`` (eval mode) to ONNX with a dynamic batch axis."""
    wrapper = CamModel(model.eval(), arch, trust, probe).eval()
    dummy = torch.zeros(2, 3, *image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (dummy,),
            input_names=[INPUT_NAME],
            output_names=output_names(trust is not None, probe),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"image": {0: batch}},
        )
    return program.model_proto


def probe_bytes(
    model: nn.Module, arch: Arch, image_size: tuple[int, int], opset: int = DEFAULT_OPSET
) -> bytes:
    """The probe graph (outputs ``logits`` and pooled ``features``), ready for onnxruntime."""
    proto = export_model_proto(model, arch, image_size, opset, probe=True)
    _clamp_ir_version(proto)
    return proto.SerializeToString()


def finalise(proto: onnx.ModelProto, metadata: ModelMetadata) -> bytes:
    """Attach metadata and descriptions, clamp the IR version for onnxruntime, run the full
    checker."""
    del proto.metadata_props[:]
    for key, value in metadata.to_metadata_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    for value in (*proto.graph.input, *proto.graph.output):
        value.doc_string = TENSOR_MEANINGS.get(value.name, "")
    proto.doc_string = describe_file(proto, metadata)
    proto.producer_name = "btxrd-export"
    proto.producer_version = btxrd_version()
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise ModelError("exported graph references external data; btxrd ships single files")
    _clamp_ir_version(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def describe_file(proto: onnx.ModelProto, metadata: ModelMetadata) -> str:
    """The model's description (ONNX ``doc_string``), for tools that show it (Netron,
    onnxruntime's ``ModelMetadata.description``) and for integrators without btxrd."""
    name = metadata.name or "btxrd model"
    version = f" version {metadata.version}" if metadata.version else ""
    lines = [
        f"{name}{version}: bone radiograph classifier exported by btxrd-export ({metadata.arch}).",
        f"Intended use: {metadata.intended_use}",
        f"Classes, in output order: {', '.join(metadata.class_names)}.",
        "Input and outputs (N is the batch):",
    ]
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        shape = " x ".join(d.dim_param or str(d.dim_value) for d in dims)
        lines.append(f"- {value.name} [{shape}]: {TENSOR_MEANINGS.get(value.name, '')}")
    lines.append(
        "Metadata (metadata_props, each value JSON under btxrd.*): class_names, "
        "preprocessing (the input contract), model (name, version), arch, provenance, "
        "intended_use, reference_scores"
        + (", trust (calibration and the gate)." if metadata.trust else ".")
    )
    return "\n".join(lines)


def _clamp_ir_version(proto: onnx.ModelProto) -> None:
    # onnx writes IR versions newer than onnxruntime may read. Step down until it accepts.
    options = ort.SessionOptions()
    options.log_severity_level = 4
    while proto.ir_version > 7:
        try:
            ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            return
        except Exception as exc:  # onnxruntime's pybind errors carry no useful type
            if "IR version" not in str(exc) and "ir_version" not in str(exc):
                raise ModelError(f"onnxruntime cannot load the exported graph: {exc}") from None
            proto.ir_version -= 1
    raise ModelError(f"onnxruntime {ort.__version__} accepts no IR version this graph can use")


def build_metadata(
    checkpoint: Checkpoint,
    arch: Arch,
    reference_scores: dict,
    intended_use: str | None,
    trust: Trust | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
) -> ModelMetadata:
    """The file's metadata. ``name`` and ``version`` default to the checkpoint's
    ``model_name`` and ``model_version`` (``save_checkpoint(..., model_name=...)``), the name
    then to the checkpoint file's stem."""
    training = checkpoint.extra.get("training") if isinstance(checkpoint.extra, dict) else None
    is_demo = bool(isinstance(training, dict) and training.get("demo"))
    return ModelMetadata(
        class_names=checkpoint.class_names,
        preprocessing=checkpoint.preprocessing,
        arch=arch.name,
        provenance={
            "checkpoint_file": checkpoint.path.name,
            "checkpoint_sha256": checkpoint.sha256,
            "export_date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "onnxruntime_version_checked": ort.__version__,
            "demo_model": is_demo,
            "epoch": checkpoint.extra.get("epoch"),
        },
        intended_use=intended_use or intended_use_for(is_demo),
        reference_scores=reference_scores,
        trust=trust,
        name=name or _text(checkpoint.extra.get("model_name")) or checkpoint.path.stem,
        version=version or _text(checkpoint.extra.get("model_version")),
    )


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and str(value) else None


@contextlib.contextmanager
def _quiet_exporter():
    # The dynamo exporter prints progress and warnings to stdout; stdout belongs to results.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield
