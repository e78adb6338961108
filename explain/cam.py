"""Class activation maps with pytorch-grad-cam, checked before anyone sees them, and fast.

pytorch-grad-cam is imported only inside ``compute_cams`` (its import alone costs ~4 s). Its
pitfalls are handled here: gradients are enabled explicitly, hooks are always released (context
manager), there is one target per image, and since its ``__exit__`` swallows ``IndexError`` (and
prints to stdout) the returned maps are checked: shape, finite values, not flat.

Speed: a CAM needs the gradient of the class score with respect to the target layer's output,
and nothing else. ``frozen_for_cam`` switches off ``requires_grad`` on every parameter and marks
the target layer's output as requiring gradients, so the forward pass records no graph before
that layer and the backward pass runs through the head only: one CAM costs about one forward pass.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from btxrd.explain.methods import GRADIENT_FREE, METHODS, check_method
from btxrd.runtime.errors import ModelError
from btxrd.runtime.settings import GradcamSettings

CAM_BATCH = 8
_FLAT = 1e-6


@dataclass(frozen=True)
class CamResult:
    """One image's map at the model-input grid, in [0, 1], or why there is none."""

    cam: np.ndarray | None
    target: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.cam is not None


def compute_cams(
    model: nn.Module,
    target_layer: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: Sequence[int],
    method: str = GradcamSettings.method,
    *,
    freeze: bool = True,
    batch_size: int = CAM_BATCH,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[CamResult]:
    """CAMs for preprocessed ``inputs`` (N, 3, H, W), one target class index per image.

    ``freeze=False`` runs pytorch-grad-cam as it comes (every parameter collects gradients); the
    maps are the same, only slower. ``reshape`` lays a token model's tokens on their grid
    (pytorch-grad-cam's ``reshape_transform``). A degenerate map comes back with ``problem``
    set, never as a map.
    """
    check_method(method)
    tensor = torch.as_tensor(np.asarray(inputs) if not torch.is_tensor(inputs) else inputs)
    if tensor.ndim != 4 or len(tensor) != len(targets):
        raise ValueError(f"need (N, 3, H, W) inputs and N targets, got {tuple(tensor.shape)}")
    if not any(module is target_layer for module in model.modules()):
        raise ModelError(f"the CAM target layer {type(target_layer).__name__} is not in the model")
    results: list[CamResult] = []
    model.eval()
    needs_gradients = method not in GRADIENT_FREE
    guard = frozen_for_cam(model, target_layer, needs_gradients) if freeze else _unfrozen(model)
    with guard, torch.enable_grad():
        for start in range(0, len(tensor), batch_size):
            chunk = tensor[start : start + batch_size].float().contiguous()
            wanted = [int(t) for t in targets[start : start + batch_size]]
            maps = _run_pytorch_grad_cam(model, target_layer, chunk, wanted, method, reshape)
            size = tuple(chunk.shape[-2:])
            results.extend(_checked(m, t, size, method) for m, t in zip(maps, wanted, strict=True))
    return results


@contextlib.contextmanager
def frozen_for_cam(model: nn.Module, target_layer: nn.Module, needs_gradients: bool) -> Iterator:
    """Freeze every parameter; let gradients start at the target layer's output. Restores all."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    handle = (
        # prepend: must run before pytorch-grad-cam's own hook, which only hooks tensors that
        # already require gradients.
        target_layer.register_forward_hook(_activation_requires_grad, prepend=True)
        if needs_gradients
        else None
    )
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        for parameter, flag in saved:
            parameter.requires_grad_(flag)


def _activation_requires_grad(module: nn.Module, args: object, output: object) -> None:
    # With every parameter frozen and an input that needs no gradient, the target layer's
    # output is a leaf of an empty graph; marking it makes it the graph's only root.
    if isinstance(output, torch.Tensor) and output.is_floating_point() and not output.requires_grad:
        output.requires_grad_(True)


@contextlib.contextmanager
def _unfrozen(model: nn.Module) -> Iterator:
    try:
        yield
    finally:
        model.zero_grad(set_to_none=True)  # the naive path leaves weight gradients behind


def load_backend():
    """Import pytorch-grad-cam (about 4 s the first time); callers timing CAMs call it first."""
    import pytorch_grad_cam

    return pytorch_grad_cam


def _run_pytorch_grad_cam(
    model: nn.Module,
    layer: nn.Module,
    batch: torch.Tensor,
    targets: list[int],
    method: str,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(load_backend(), METHODS[method])
    maps = None
    try:
        # Its __exit__ prints the exceptions it swallows; keep stdout for results.
        with (
            contextlib.redirect_stdout(sys.stderr),
            cam_class(model=model, target_layers=[layer], reshape_transform=reshape) as cam,
            _passed_on_as_copy(layer),
        ):
            maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(t) for t in targets])
    except RuntimeError as exc:
        raise ModelError(
            f"{method} on layer {type(layer).__name__} failed: {str(exc).splitlines()[0]}"
        ) from None
    if maps is None:
        raise ModelError(
            f"{method} on layer {type(layer).__name__} returned nothing (pytorch-grad-cam "
            f"swallowed an IndexError); are the target classes {targets} valid for this model?"
        )
    return np.asarray(maps)


@contextlib.contextmanager
def _passed_on_as_copy(layer: nn.Module) -> Iterator[None]:
    """The layer's output goes on as a copy, after pytorch-grad-cam's hooks have kept it, so an
    in-place operation after the layer (torchvision DenseNet's ``relu(inplace=True)``) cannot
    change the activations it weighs, nor trip over a tensor that requires gradients."""
    handle = layer.register_forward_hook(lambda _module, _args, output: output.clone())
    try:
        yield
    finally:
        handle.remove()


def _checked(cam: np.ndarray, target: int, size: tuple[int, ...], method: str) -> CamResult:
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != size:
        return CamResult(None, target, f"{method} map has shape {cam.shape}, expected {size}")
    if not np.isfinite(cam).all():
        return CamResult(None, target, f"{method} map contains NaN or infinity")
    low, high = float(cam.min()), float(cam.max())
    if high - low <= _FLAT:
        return CamResult(
            None,
            target,
            f"{method} map is flat ({high:.3g} everywhere): the target layer holds no "
            "positive evidence for the class",
        )
    return CamResult(((cam - low) / (high - low)).astype(np.float32), target)
