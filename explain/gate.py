"""The out-of-distribution gate and calibration for the explainer. A checkpoint carries neither:
both are fitted at export and live in the ONNX file exported from it. The explainer runs that file
(the runtime's own ``OnnxModel``) on the very inputs it explains, so ``btxrd-explain`` gives each
image the verdict and the calibrated probabilities ``btxrd-run`` gives it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from btxrd.runtime.errors import ConfigError, ModelError
from btxrd.runtime.model.session import OnnxModel
from btxrd.runtime.model.verdict import OodVerdict, verdict_for


@dataclass(frozen=True)
class GateResult:
    """One batch through the exported model: a verdict and calibrated probabilities per row."""

    verdicts: list[OodVerdict]
    probabilities: np.ndarray  # (N, C), softmax(logits / T)


@dataclass(frozen=True)
class Gate:
    """The ONNX file exported from the explained checkpoint, with its gate and calibration."""

    model: OnnxModel

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def method(self) -> str:
        trust = self.model.info.trust
        assert trust is not None  # gate_for admits only files with trust metadata
        return trust.ood.method

    @property
    def threshold(self) -> float:
        trust = self.model.info.trust
        assert trust is not None
        return trust.ood.threshold

    def identity(self) -> dict[str, object]:
        """What reports record of the file the verdicts come from."""
        return {
            "file": str(self.path),
            "sha256": self.model.info.sha256,
            "ood_method": self.method,
            "ood_threshold": self.threshold,
        }

    def run(self, inputs: np.ndarray) -> GateResult:
        """Verdicts for preprocessed inputs (N, 3, H, W), exactly as ``btxrd-run`` computes
        them (the gate on: an out-of-distribution input is not classified)."""
        trust = self.model.info.trust
        assert trust is not None
        outputs = self.model.run(np.ascontiguousarray(inputs, dtype=np.float32))
        assert outputs.ood_score is not None and outputs.probabilities is not None
        verdicts = [verdict_for(trust, float(score)) for score in outputs.ood_score]
        return GateResult(verdicts, np.asarray(outputs.probabilities, dtype=np.float64))


def gate_for(
    checkpoint_sha256: str, model: Path | None, default: Path
) -> tuple[Gate | None, str | None]:
    """The gate for a checkpoint, and a note when there is none.

    ``model`` (``--model``) must be an export of this checkpoint with a gate, or the run stops
    with a one-line error. Without it, ``default`` (the configured model, the shipped demo ONNX)
    is used when it was exported from this checkpoint; otherwise the run goes on without a gate
    and the note says how to get one."""
    path = model or default
    if model is None and not path.is_file():
        return None, _no_gate(f"{path} does not exist")
    try:
        onnx = OnnxModel(path)
    except ModelError:
        if model is not None:
            raise
        return None, _no_gate(f"{path} cannot be opened")
    exported_from = onnx.info.metadata.provenance.get("checkpoint_sha256")
    if exported_from != checkpoint_sha256:
        problem = (
            f"{path} was exported from another checkpoint (sha256 "
            f"{str(exported_from)[:12]}..., this one {checkpoint_sha256[:12]}...)"
        )
        if model is not None:
            raise ConfigError(f"--model {problem}; pass the ONNX file exported from it")
        return None, _no_gate(problem)
    if onnx.info.trust is None:
        problem = f"{path} was exported without calibration data, so it carries no gate"
        if model is not None:
            raise ConfigError(
                f"--model {problem}; export it with btxrd-export --calibration-data DIR"
            )
        return None, _no_gate(problem)
    return Gate(onnx), None


def _no_gate(reason: str) -> str:
    return (
        f"note: no out-of-distribution gate or calibration: {reason}; every image gets a class "
        "and raw softmax probabilities (pass --model with the ONNX file exported from this "
        "checkpoint)"
    )
