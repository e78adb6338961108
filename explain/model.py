"""The PyTorch side of the explainer: load a checkpoint, turn image files into model inputs with
the runtime's one preprocessing, and predict without gradients."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from btxrd.export.archs import Arch
from btxrd.export.checkpoint import Checkpoint, build_model, load_checkpoint
from btxrd.runtime.contract import Preprocessing
from btxrd.runtime.imageio import DecodedImage, load_image
from btxrd.runtime.preprocess import preprocess

PREDICT_BATCH = 16


@dataclass(frozen=True)
class Explainer:
    """A checkpoint's network in eval mode with its architecture and preprocessing."""

    model: nn.Module
    arch: Arch
    checkpoint: Checkpoint

    @property
    def prep(self) -> Preprocessing:
        return self.checkpoint.preprocessing

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.checkpoint.class_names

    @property
    def target_layer(self) -> nn.Module:
        return self.arch.target_layer(self.model)

    @property
    def target_layer_name(self) -> str:
        layer = self.target_layer
        return next((name for name, m in self.model.named_modules() if m is layer), "?")

    @cached_property
    def cam_grid(self) -> tuple[int, int]:
        """(rows, columns) of the target layer's output: the grid every CAM of this model is
        upsampled from (7 x 7 for EfficientNet-B0 at 224 px). Measured once per explainer."""
        return measure_cam_grid(self.model, self.target_layer, self.prep.image_size)

    @property
    def demo(self) -> bool:
        """Whether the training recipe marked this checkpoint as the demo model (it decides the
        intended-use statement); read from the checkpoint, no forward pass."""
        return bool(_training(self.checkpoint).get("demo", False))

    def identity(self) -> dict[str, Any]:
        """What reports record about the model. Measures ``cam_grid`` (one forward pass) on first
        use; a run asks once (``ExplainRun.model_identity``)."""
        return {
            "checkpoint": str(self.checkpoint.path),
            "sha256": self.checkpoint.sha256,
            "arch": self.arch.name,
            "class_names": list(self.class_names),
            "image_size": list(self.prep.image_size),
            "target_layer": self.target_layer_name,
            "cam_grid": list(self.cam_grid),
            "demo": self.demo,
        }

    def recorded_split(self) -> str | None:
        """The split file the training recipe wrote, when the checkpoint records one."""
        recipe = _training(self.checkpoint).get("recipe")
        output = recipe.get("output") if isinstance(recipe, dict) else None
        split = output.get("split") if isinstance(output, dict) else None
        return str(split) if split else None


def load_explainer(path: str | Path) -> Explainer:
    """Load a checkpoint safely (``weights_only=True``) and build its network in eval mode."""
    checkpoint = load_checkpoint(path)
    model, arch = build_model(checkpoint)
    return Explainer(model=model.eval(), arch=arch, checkpoint=checkpoint)


def measure_cam_grid(
    model: nn.Module, target_layer: nn.Module, image_size: tuple[int, int]
) -> tuple[int, int]:
    """(rows, columns) of ``target_layer``'s output for one zero input of ``image_size``."""
    shapes: list[tuple[int, ...]] = []
    handle = target_layer.register_forward_hook(
        lambda _module, _inputs, output: shapes.append(tuple(output.shape[-2:]))
    )
    try:
        with torch.inference_mode():
            model(torch.zeros((1, 3, *image_size)))
    finally:
        handle.remove()
    rows, columns = shapes[0]
    return int(rows), int(columns)


def load_input(path: str | Path, prep: Preprocessing) -> tuple[DecodedImage, np.ndarray]:
    """Decode ``path`` upright and preprocess it exactly as the ONNX runtime does."""
    decoded = load_image(path)
    return decoded, preprocess(decoded, prep)


def predict_probabilities(
    model: nn.Module, inputs: np.ndarray, batch_size: int = PREDICT_BATCH
) -> np.ndarray:
    """Softmax probabilities (N, C) for preprocessed inputs (N, 3, H, W), without gradients."""
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size]))
            chunks.append(torch.softmax(model(batch).float(), dim=1).numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float64)


def _training(checkpoint: Checkpoint) -> dict[str, Any]:
    training = checkpoint.extra.get("training")
    return training if isinstance(training, dict) else {}
