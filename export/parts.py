"""Where a classifier keeps what btxrd needs, found from the model itself (no table of families):
the final linear layer, whose input is the penultimate vector the out-of-distribution gate
looks at; the Grad-CAM target layer; and how the exported graph computes Grad-CAM on it.

One forward pass with a hook on every module shows the structure:

- the **classifier** is timm's ``get_classifier()`` or, for any other network, the
  ``nn.Linear`` whose output is the model's output;
- the **target layer** is the last module, before the classifier, whose output is a feature
  map (N x K x h x w, h * w > 1): for the predecessor's choices (timm EfficientNet ``bn2``,
  ResNet ``layer4``) the same tensor. A token model (ViT and kin: tokens N x T x D after the
  last feature map, the patch embedding) takes the first norm of its last block, whose
  tokens are reshaped onto the patch grid (pytorch-grad-cam's recipe);
  ``--target-layer NAME`` names any other module;
- the **CAM kind**: ``linear`` where the classifier's input is the global average of the
  target's output (ResNet, EfficientNet, RegNet, timm DenseNet, ...): Grad-CAM is then
  ReLU(sum_k W[c, k] A_k) up to a positive scale, in closed form; ``gradient`` for any other
  head (a ReLU after the target, LayerNorm + Linear as in ConvNeXt, an MLP as in MobileNetV3,
  attention in a ViT): the graph differentiates the head (see ``btxrd.export.onnx_export``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from btxrd.runtime.errors import ModelError

CAM_LINEAR = "linear"
CAM_GRADIENT = "gradient"
# The containers a token model keeps its blocks in: timm's ViT family, torchvision's ViT.
_BLOCK_LISTS = ("blocks", "encoder.layers")


@dataclass(frozen=True)
class ModelParts:
    """What ``find_parts`` found. Names are dotted module names (``model.get_submodule``)."""

    target: str
    classifier: str
    cam: str  # CAM_LINEAR or CAM_GRADIENT
    grid: tuple[int, int]  # rows and columns of the CAM at the export's input size
    prefix_tokens: int | None = None  # token models: tokens before the grid; None: a feature map
    chosen_by: str = "found"  # "found" from the structure, or "given" (--target-layer)

    def target_layer(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.target)

    def classifier_layer(self, model: nn.Module) -> nn.Linear:
        layer = model.get_submodule(self.classifier)
        assert isinstance(layer, nn.Linear)
        return layer

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """The target's output (or its gradient) as N x K x h x w: tokens after the prefix laid
        onto the patch grid; a feature map as it is."""
        if self.prefix_tokens is None:
            return activation
        rows, columns = self.grid
        tokens = activation[:, self.prefix_tokens :, :]
        return tokens.reshape(tokens.shape[0], rows, columns, tokens.shape[2]).permute(0, 3, 1, 2)


@dataclass
class _Seen:
    name: str
    output: torch.Tensor


def find_parts(
    model: nn.Module, image_size: tuple[int, int], target: str | None = None
) -> ModelParts:
    """The parts of ``model`` (eval mode) at ``image_size``; ``target`` overrides the Grad-CAM
    layer. ``ModelError`` saying what is missing for a network btxrd cannot export."""
    model = model.eval()
    names = {module: name for name, module in model.named_modules()}
    seen: list[_Seen] = []
    inputs: dict[str, torch.Tensor] = {}
    x = torch.randn(2, 3, *image_size, generator=torch.Generator().manual_seed(0))
    with _hooks(model, seen, inputs), torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ModelError(
            f"{type(model).__name__} returns {type(logits).__name__}, not an N x C tensor of "
            "class scores"
        )
    classifier = _classifier(model, names, seen, logits)
    before = seen[: next(i for i, s in enumerate(seen) if s.name == classifier)]
    if target is not None:
        return _given(model, target, before, inputs[classifier], classifier, image_size)
    tokens = _token_target(model, before)
    if tokens is not None:
        return _token_parts(tokens, before, classifier)
    maps = [s for s in before if _is_feature_map(s.output)]
    if not maps:
        raise ModelError(
            f"no feature map found in {type(model).__name__} before its classifier; pass "
            "--target-layer NAME"
        )
    # The last to finish: a block's container (layer4) rather than the layer its in-place
    # additions reuse the output of (layer4.1.bn2), whose own output Grad-CAM would see.
    return _map_parts(maps[-1].name, maps[-1].output, inputs[classifier], classifier, "found")


def _given(
    model: nn.Module,
    target: str,
    before: list[_Seen],
    penultimate: torch.Tensor,
    classifier: str,
    image_size: tuple[int, int],
) -> ModelParts:
    try:
        model.get_submodule(target)
    except AttributeError:
        raise ModelError(
            f"--target-layer {target!r} is not a module of {type(model).__name__}"
        ) from None
    found = [s for s in before if s.name == target]
    if not found:
        raise ModelError(f"--target-layer {target!r} does not run before the classifier")
    output = found[-1].output
    if _is_feature_map(output):
        return _map_parts(target, output, penultimate, classifier, "given")
    if _is_tokens(output):
        parts = _token_parts(target, before, classifier)
        return ModelParts(**{**parts.__dict__, "chosen_by": "given"})
    raise ModelError(
        f"--target-layer {target!r} gives a {tuple(output.shape)} tensor; Grad-CAM needs "
        "N x K x h x w feature maps or N x T x D tokens"
    )


def _map_parts(
    name: str, output: torch.Tensor, penultimate: torch.Tensor, classifier: str, chosen: str
) -> ModelParts:
    pooled = output.mean(dim=(2, 3))
    linear = pooled.shape == penultimate.shape and torch.allclose(
        pooled, penultimate, rtol=1e-4, atol=1e-5
    )
    grid = (int(output.shape[2]), int(output.shape[3]))
    return ModelParts(name, classifier, CAM_LINEAR if linear else CAM_GRADIENT, grid, None, chosen)


def _token_parts(target: str, before: list[_Seen], classifier: str) -> ModelParts:
    output = next(s.output for s in reversed(before) if s.name == target)
    first_tokens = next(i for i, s in enumerate(before) if _is_tokens(s.output))
    patches = [s for s in before[:first_tokens] if _is_feature_map(s.output)]
    if not patches:
        raise ModelError(f"{target}: tokens with no patch grid before them")
    grid = (int(patches[-1].output.shape[2]), int(patches[-1].output.shape[3]))
    prefix = int(output.shape[1]) - grid[0] * grid[1]
    if prefix < 0:
        raise ModelError(f"{target}: {output.shape[1]} tokens do not cover the {grid} patch grid")
    return ModelParts(target, classifier, CAM_GRADIENT, grid, prefix)


def _token_target(model: nn.Module, before: list[_Seen]) -> str | None:
    """For a model whose last spatial output is tokens, the first norm of its last block."""
    spatial = [s for s in before if _is_feature_map(s.output) or _is_tokens(s.output)]
    if not spatial or not _is_tokens(spatial[-1].output):
        return None
    for container in _BLOCK_LISTS:
        try:
            blocks = list(model.get_submodule(container).named_children())
        except AttributeError:
            continue
        if not blocks:
            continue
        block_name, block = blocks[-1]
        for name, module in block.named_modules():
            if isinstance(module, nn.LayerNorm):
                return f"{container}.{block_name}.{name}"
    raise ModelError(
        f"{type(model).__name__} works on tokens, but btxrd knows no block list in it "
        f"({', '.join(_BLOCK_LISTS)}); pass --target-layer NAME (a module with N x T x D output)"
    )


def _classifier(
    model: nn.Module, names: dict[nn.Module, str], seen: list[_Seen], logits: torch.Tensor
) -> str:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Linear) and head in names:
        return names[head]
    linear = {name for module, name in names.items() if isinstance(module, nn.Linear)}
    for item in reversed(seen):
        if item.name in linear and (item.output is logits or torch.equal(item.output, logits)):
            return item.name
    raise ModelError(
        f"{type(model).__name__}'s class scores do not come from a linear layer; btxrd needs the "
        "classifier to end in nn.Linear (its input is what the out-of-distribution gate reads)"
    )


def _is_feature_map(value: torch.Tensor) -> bool:
    return value.ndim == 4 and value.shape[2] * value.shape[3] > 1


def _is_tokens(value: torch.Tensor) -> bool:
    return value.ndim == 3 and value.shape[1] > 1


@contextmanager
def _hooks(model: nn.Module, seen: list[_Seen], inputs: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []
    for name, module in model.named_modules():
        if module is model:
            continue

        def record(_module, args, output, name=name):
            # A copy: a later in-place operation must not change what this layer gave.
            if isinstance(output, torch.Tensor):
                seen.append(_Seen(name, output.clone()))

        def record_input(_module, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                inputs[name] = args[0].clone()

        handles.append(module.register_forward_hook(record))
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(record_input))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Caught:
    """What one forward pass showed: the target layer's output (a gradient leaf with
    ``leaf=True``), the classifier's input (the penultimate vector) and the pooled taps."""

    target: torch.Tensor | None = None
    penultimate: torch.Tensor | None = None
    stages: list[torch.Tensor] | None = None

    def pooled(self) -> list[torch.Tensor]:
        """The taps the out-of-distribution score reads: each stage's output averaged over its
        positions where the layout has stages (``btxrd.export.trust.taps``), else the
        penultimate vector."""
        if self.stages:
            return [stage.mean(dim=(2, 3)) for stage in self.stages]
        assert self.penultimate is not None
        return [self.penultimate.flatten(1)]


@contextmanager
def catch(
    model: nn.Module,
    parts: ModelParts,
    stages: list[nn.Module] | None = None,
    *,
    leaf: bool = False,
) -> Iterator[Caught]:
    """Hooks for one forward pass of ``model`` that fill a ``Caught``. The target's output is
    passed on as a copy, so an in-place operation after it (torchvision DenseNet's
    ``relu(inplace=True)``) cannot change what Grad-CAM reads; with ``leaf`` it is a tensor
    that requires a gradient, which ``torch.autograd.grad`` differentiates the head for."""
    caught = Caught(stages=[] if stages else None)

    def on_target(_module, _args, output):
        kept = output.detach().requires_grad_(True) if leaf else output
        caught.target = kept
        return kept.clone()

    def on_classifier(_module, args):
        caught.penultimate = args[0]

    handles = [
        parts.target_layer(model).register_forward_hook(on_target),
        parts.classifier_layer(model).register_forward_pre_hook(on_classifier),
    ]
    for stage in stages or ():
        handles.append(stage.register_forward_hook(lambda _m, _a, out: caught.stages.append(out)))
    try:
        yield caught
    finally:
        for handle in handles:
            handle.remove()
