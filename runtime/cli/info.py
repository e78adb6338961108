"""What ``btxrd-run --info`` prints on a terminal: a short summary of ``ModelInfo.document()``
(which ``--info --json`` prints whole). Enough for someone wiring the file into another
runtime: the input and output names, types and shapes, and what each means."""

from __future__ import annotations

from typing import Any

from btxrd.runtime.model.session import ModelInfo, TensorSpec

_LABEL_WIDTH = 15


def describe_model(info: ModelInfo) -> list[str]:
    """The summary, one line per fact (a few wrap onto continuation lines)."""
    meta = info.metadata
    prep = meta.preprocessing
    lines = [f"{info.path}  (sha256 {info.sha256})"]
    lines += _row("model", _name(meta.name, meta.version) + f", architecture {meta.arch}")
    lines += _row("intended use", meta.intended_use)
    lines += _row("classes", ", ".join(meta.class_names))
    lines += _row(
        "preprocessing",
        f"{prep.image_size[1]} x {prep.image_size[0]} px ({prep.resize} resize, aspect not kept), "
        f"RGB / {prep.pixel_max:g}, mean {_numbers(prep.mean)}, std {_numbers(prep.std)}",
    )
    for label, specs in (("input", info.inputs), ("outputs", info.outputs)):
        for index, spec in enumerate(specs):
            lines += _row(label if index == 0 else "", _tensor(spec))
    lines += _row("calibration", _calibration(info))
    lines += _row("ood gate", _gate(info))
    lines += _row("heatmaps", _cam(info))
    lines += _row("provenance", _provenance(meta.provenance))
    lines.append("(btxrd-run --info --json prints all of it as JSON)")
    return lines


def _row(label: str, text: str) -> list[str]:
    return [f"{label:<{_LABEL_WIDTH}}{text}"]


def _name(name: str | None, version: str | None) -> str:
    if name is None:
        return "name and version not recorded (exported before 2026-12-07)"
    return f"{name}, version {version or 'not given'}"


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _tensor(spec: TensorSpec) -> str:
    shape = " x ".join(str(d) for d in spec.shape)
    meaning = spec.to_json()["meaning"].split(",")[0]
    return f"{spec.name}: {spec.type} [{shape}]  {meaning}"


def _calibration(info: ModelInfo) -> str:
    if info.trust is None:
        return "none: probabilities are the raw softmax"
    calibration = info.trust.calibration
    fitted = calibration.fitted_on
    text = (
        f"temperature {calibration.temperature:.4g}, fitted on {fitted.num_images} {fitted.split} "
        f"images of {fitted.data}"
    )
    before = calibration.metrics.get("before", {}).get("ece")
    after = calibration.metrics.get("after", {}).get("ece")
    if before is not None and after is not None:
        text += f"; {calibration.metrics.get('split', 'test')} ECE {before:.3f} -> {after:.3f}"
    return text


def _gate(info: ModelInfo) -> str:
    if info.trust is None:
        return "none: every image gets a class, radiograph or not"
    gate = info.trust.ood
    return (
        f"{gate.method}, refuses ood_score above {gate.threshold:.4g} (keeps "
        f"{gate.retention:.0%} of the {gate.threshold_set_on.num_images} "
        f"{gate.threshold_set_on.split} images of {gate.threshold_set_on.data})"
    )


def _cam(info: ModelInfo) -> str:
    source = info.metadata.cam
    if not info.has_cam:
        reason = f" ({source.reason})" if source is not None and source.reason else ""
        return f"no cam output{reason}: btxrd-explain draws Grad-CAM with the PyTorch checkpoint"
    if source is None:
        return "Grad-CAM in the graph (btxrd-run --cam)"
    how = {
        "linear": "closed form, global-average-pool + linear head",
        "gradient": "the head's gradient computed in the graph",
    }.get(source.kind, source.kind)
    rows, columns = source.grid
    tokens = ", tokens on their patch grid" if source.tokens else ""
    given = ", given by --target-layer" if source.target_chosen == "given" else ""
    return (
        f"Grad-CAM in the graph on {source.target_layer} ({rows} x {columns}{tokens}{given}; "
        f"{how}); btxrd-run --cam draws it"
    )


def _provenance(provenance: dict[str, Any] | Any) -> str:
    parts = []
    if provenance.get("export_date"):
        parts.append(f"exported {provenance['export_date']}")
    if provenance.get("checkpoint_file"):
        sha = str(provenance.get("checkpoint_sha256") or "")[:12]
        parts.append(
            f"from {provenance['checkpoint_file']}" + (f" (sha256 {sha}...)" if sha else "")
        )
    if provenance.get("torch_version"):
        parts.append(f"torch {provenance['torch_version']}")
    if provenance.get("demo_model"):
        parts.append("demo model")
    return ", ".join(parts) or "not recorded"
