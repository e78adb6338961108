"""The PyTorch side of the explainer: load a checkpoint, turn image files into model inputs with
the runtime's one preprocessing, and predict without gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from btxrd.export.archs import Arch
from btxrd.export.checkpoint import Checkpoint, build_model, load_checkpoint
from btxrd.export.parts import ModelParts
from btxrd.runtime.decode.decoded import DecodedImage
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import preprocess

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
        return self._parts.target

    @property
    def cam_grid(self) -> tuple[int, int]:
        """(rows, columns) of the target layer's output, tokens laid on their patch grid: the
        grid every CAM of this model is upsampled from (7 x 7 for EfficientNet-B0 at 224 px)."""
        return self._parts.grid

    @property
    def cam_reshape(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For a token model, how pytorch-grad-cam lays the target's tokens on the grid."""
        return self._parts.to_grid if self._parts.prefix_tokens is not None else None

    @property
    def _parts(self) -> ModelParts:
        assert self.arch.parts is not None  # build_model locates them
        return self.arch.parts

    @property
    def demo(self) -> bool:
        """Whether the training recipe marked this checkpoint as the demo model (it decides the
        intended-use statement); read from the checkpoint, no forward pass."""
        return bool(_training(self.checkpoint).get("demo", False))

    def identity(self) -> dict[str, Any]:
        """What reports record about the model."""
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


def load_explainer(path: str | Path, target_layer: str | None = None) -> Explainer:
    """Load a checkpoint safely (``weights_only=True``) and build its network in eval mode;
    ``target_layer`` names the Grad-CAM layer (default: found from the network)."""
    checkpoint = load_checkpoint(path)
    model, arch = build_model(checkpoint, target_layer)
    return Explainer(model=model.eval(), arch=arch, checkpoint=checkpoint)


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
