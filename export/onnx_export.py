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
import dataclasses
import datetime as dt
import io
import logging
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from btxrd.export.archs import Arch
from btxrd.export.checkpoint import Checkpoint
from btxrd.export.parts import CAM_GRADIENT, catch
from btxrd.export.trust.ood import OodScorer, TapFit
from btxrd.export.trust.taps import tap_modules
from btxrd.runtime.errors import ModelError
from btxrd.runtime.install import btxrd_version
from btxrd.runtime.model.contract import (
    CAM_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    TENSOR_MEANINGS,
    CamSource,
    ModelMetadata,
    Trust,
    intended_use_for,
)

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
    """The classifier, run by its own forward, re-wired to also return its class activation
    maps, and with ``trust`` its calibrated probabilities and out-of-distribution score.
    ``probe`` returns the logits and the pooled taps, concatenated, instead (what export fits
    trust on); ``cam=False`` leaves the maps out.

    Where the head is global average pooling + linear (``parts.cam == "linear"``), Grad-CAM is
    the closed form of the module docstring. For any other head the maps need the head's
    gradient, which ``torch.export`` cannot trace: the forward and its gradients are traced to
    plain operations first (``make_fx``), and that graph is exported."""

    def __init__(
        self,
        model: nn.Module,
        arch: Arch,
        trust: TrustHead | None = None,
        probe: bool = False,
        cam: bool = True,
        example: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        assert arch.parts is not None, "locate the architecture's parts first"
        self.model = model
        self.parts = arch.parts
        self.head = arch.head(model)
        self.stages = tap_modules(model)
        self.trust = trust
        self.probe = probe
        self.with_cam = cam and not probe
        self.traced: nn.Module | None = None
        if self.with_cam and self.parts.cam == CAM_GRADIENT:
            assert example is not None, "tracing the gradients needs an example input"
            self.traced = _trace_gradients(self, example)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.traced is not None:
            logits, activation, weights, *pooled = self.traced(image)
            cam = torch.relu(torch.einsum("nkhw,nck->nchw", activation, weights))
        else:
            with catch(self.model, self.parts, self.stages) as caught:
                logits = self.model(image)
            pooled = caught.pooled()
            if self.probe:
                return logits, torch.cat(pooled, dim=1)
            if self.with_cam:
                activation = self.parts.to_grid(caught.target)
                cam = torch.relu(torch.einsum("nkhw,ck->nchw", activation, self.head.weight))
        outputs = (logits, cam) if self.with_cam else (logits,)
        if self.trust is None:
            return outputs
        return (*outputs, *self.trust(pooled, logits))

    def forward_with_gradients(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits, the target's output on its grid (N, K, h, w), Grad-CAM's channel weights of
        every class (N, C, K: the gradient of the class score averaged over the positions, as
        pytorch-grad-cam computes them) and the pooled taps."""
        # Original view tracking: autograd replays views by their own functions, not as
        # as_strided on a zero-filled copy, which has no ONNX form.
        with (
            torch.enable_grad(),
            torch.autograd._force_original_view_tracking(True),
            catch(self.model, self.parts, self.stages, leaf=True) as seen,
        ):
            logits = self.model(image)
            classes = logits.shape[1]
            gradients = [
                torch.autograd.grad(logits[:, c].sum(), seen.target, retain_graph=c < classes - 1)[
                    0
                ]
                for c in range(classes)
            ]
        assert seen.target is not None
        weights = torch.stack([self.parts.to_grid(g).mean(dim=(2, 3)) for g in gradients], dim=1)
        activation = self.parts.to_grid(seen.target.detach())
        return logits.detach(), activation, weights, *(p.detach() for p in seen.pooled())


def _trace_gradients(wrapper: CamModel, example: torch.Tensor) -> nn.Module:
    """``wrapper.forward_with_gradients`` as a graph of plain operations, batch size symbolic."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def forward_with_gradients(image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return wrapper.forward_with_gradients(image)

    # The math form of attention and the core decompositions: the backward passes of fused
    # attention and of view operations otherwise leave operators that have no ONNX form.
    with _quiet_exporter(), sdpa_kernel(SDPBackend.MATH):
        decompositions = {
            **core_aten_decompositions(),
            torch.ops.aten.convolution_backward.default: _convolution_input_gradient,
        }
        traced = make_fx(
            forward_with_gradients,
            decomposition_table=decompositions,
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(example)
    _reshape_strided_copies(traced)
    return traced


def _convolution_input_gradient(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: object,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, None, None]:
    """A 2-d convolution's gradient with respect to its input, as the transposed convolution
    it is (ONNX ConvTranspose): a Grad-CAM layer before convolutions of the head
    (``--target-layer layer3``) needs it, and ``convolution_backward`` has no ONNX form. Only
    the input's gradient is asked for: every other layer's weights are not differentiated."""
    if transposed or input.dim() != 4 or not output_mask[0] or any(output_mask[1:]):
        raise NotImplementedError("only the input gradient of a 2-d convolution")
    size, kernel, out = input.shape[2:], weight.shape[2:], grad_output.shape[2:]
    # The rows and columns the forward convolution's stride left over, restored.
    extra = [
        size[i] - ((out[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
        for i in range(2)
    ]
    grad_input = torch.nn.functional.conv_transpose2d(
        grad_output, weight, None, stride, padding, extra, groups, dilation
    )
    return grad_input, None, None


def _reshape_strided_copies(graph_module: torch.fx.GraphModule) -> None:
    """Rewrite, in place, the one backward idiom with no ONNX form: autograd hands a gradient
    back through a view of a permuted tensor (ConvNeXt's LayerNorm2d on the pooled map) by
    copying it into a zero-filled buffer (``full``, ``as_strided``, ``copy_``) and reading the
    buffer back with ``as_strided``. Where the copy and every read are contiguous views of the
    same elements from offset 0, each read is a reshape of what was copied."""
    aten = torch.ops.aten
    graph = graph_module.graph
    for copy in [n for n in graph.nodes if n.target is aten.copy_.default]:
        view, source = copy.args[0], copy.args[1]
        if getattr(view, "target", None) is not aten.as_strided.default:
            continue
        buffer = view.args[0]
        if buffer.target is not aten.full.default or buffer.args[1] != 0:
            continue
        reads = [user for user in buffer.users if user is not view]
        views = [view, *reads]
        if not all(n.target is aten.as_strided.default and _contiguous(n) for n in views):
            continue
        if not all(_same_elements(view, read) for read in reads):
            continue
        for read in reads:
            with graph.inserting_before(read):
                reshaped = graph.call_function(aten.reshape.default, (source, read.args[1]))
            read.replace_all_uses_with(reshaped)
            graph.erase_node(read)
        graph.erase_node(copy)
        graph.erase_node(view)
        graph.erase_node(buffer)
    graph.lint()
    graph_module.recompile()


def _contiguous(view: torch.fx.Node) -> bool:
    """An ``as_strided`` view with row-major strides from offset 0 (sizes known past dim 0)."""
    size, stride = view.args[1], view.args[2]
    offset = view.args[3] if len(view.args) > 3 else view.kwargs.get("storage_offset", 0)
    if offset != 0 or not all(isinstance(d, int) for d in size[1:]):
        return False
    expected = [math.prod(size[i + 1 :]) for i in range(len(size))]
    return list(stride) == expected


def _same_elements(first: torch.fx.Node, second: torch.fx.Node) -> bool:
    """Both views cover the same number of elements: the same symbolic leading size, and the
    same product of the known ones."""
    a, b = first.args[1], second.args[1]
    same_leading = a[0] is b[0] or a[0] == b[0]
    return same_leading and math.prod(a[1:]) == math.prod(b[1:])


def output_names(trust: bool, probe: bool = False, cam: bool = True) -> list[str]:
    """The graph's outputs, in order."""
    if probe:
        return [LOGITS_NAME, FEATURES_NAME]
    names = [LOGITS_NAME, *((CAM_NAME,) if cam else ())]
    return [*names, *((PROBABILITIES_NAME, OOD_SCORE_NAME) if trust else ())]


def export_model_proto(
    model: nn.Module,
    arch: Arch,
    image_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    trust: TrustHead | None = None,
    probe: bool = False,
    cam: bool = True,
) -> onnx.ModelProto:
    """Trace ``model`` (eval mode) to ONNX with a dynamic batch axis."""
    dummy = torch.zeros(2, 3, *image_size)
    wrapper = CamModel(model.eval(), arch, trust, probe, cam, example=dummy).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (dummy,),
            input_names=[INPUT_NAME],
            output_names=output_names(trust is not None, probe, cam and not probe),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"image": {0: batch}},
        )
    return program.model_proto


def export_with_cam(
    model: nn.Module,
    arch: Arch,
    image_size: tuple[int, int],
    opset: int = DEFAULT_OPSET,
    trust: TrustHead | None = None,
) -> tuple[onnx.ModelProto, CamSource]:
    """The graph with its ``cam`` output, and how that output is made. Where the head's
    gradient cannot be exported (an operation with no ONNX form in its backward pass), the
    graph has no ``cam`` output and the source says why."""
    parts = arch.parts
    assert parts is not None
    source = CamSource(
        kind=parts.cam,
        target_layer=parts.target,
        grid=parts.grid,
        tokens=parts.prefix_tokens is not None,
        target_chosen=parts.chosen_by,
        classifier=parts.classifier,
    )
    try:
        return export_model_proto(model, arch, image_size, opset, trust=trust), source
    except Exception as exc:  # torch.export and onnxscript raise many types, none of them ours
        if parts.cam != CAM_GRADIENT:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        reason = f"the gradient of its head could not be exported ({type(exc).__name__}: {first})"
    proto = export_model_proto(model, arch, image_size, opset, trust=trust, cam=False)
    return proto, dataclasses.replace(source, kind="none", reason=reason)


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
    cam: CamSource | None = None,
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
        cam=cam,
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
