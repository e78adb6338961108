"""Architectures: how to build each by name, and, once built, where its parts are.

Any torchvision classification model (``torchvision.models.list_models``), the demo model's
``efficientnet_b0_os16``, and ``timm/<name>`` for any model the installed timm lists. Where a
network's Grad-CAM layer, classifier and penultimate vector are is found from the network
itself (``btxrd.export.parts``), not from a table: ``Arch.locate`` does that once it is built.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from btxrd.export.parts import ModelParts, find_parts
from btxrd.runtime.errors import ModelError
from btxrd.runtime.install import install_hint

TIMM_PREFIX = "timm/"
# A plain timm model name, optionally with a pretrained tag (`efficientnet_b0.ra_in1k`). Anything
# else is refused before timm sees it: `hf-hub:...` or `local-dir:...` would make it contact a hub
# or read files named by the checkpoint.
_TIMM_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)?")


@dataclass(frozen=True)
class Arch:
    """An architecture by name; ``parts`` once ``locate`` has looked at a built network."""

    name: str
    build: Callable[[int], nn.Module]  # num_classes -> randomly initialised model
    parts: ModelParts | None = None

    def locate(
        self, model: nn.Module, image_size: tuple[int, int], target: str | None = None
    ) -> Arch:
        """This architecture with the parts of ``model`` (``find_parts``), its training mode
        kept; ``target`` names the Grad-CAM layer (``--target-layer``)."""
        training = model.training
        try:
            parts = find_parts(model, image_size, target)
        finally:
            model.train(training)
        return dataclasses.replace(self, parts=parts)

    def head(self, model: nn.Module) -> nn.Linear:
        """The final linear layer (its input is the penultimate vector)."""
        return self._located().classifier_layer(model)

    def target_layer(self, model: nn.Module) -> nn.Module:
        """The Grad-CAM layer."""
        return self._located().target_layer(model)

    def _located(self) -> ModelParts:
        if self.parts is None:
            raise RuntimeError(f"{self.name}: call locate() on a built model first")
        return self.parts


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        # weights=None: no pretrained weights exist on this machine, and none are downloaded.
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    return build


def _efficientnet_b0_os16(num_classes: int) -> nn.Module:
    """EfficientNet-B0 with output stride 16: the last stride-2 convolution (the depthwise
    convolution opening stage 6) keeps the resolution, so the last feature map, and Grad-CAM with
    it, is 14 x 14 at 224 px instead of 7 x 7. Same layers, same state-dict layout.

    Why: Grad-CAM upsamples bilinearly, so its peak always sits on a cell centre; at 7 x 7 the
    centres are 32 px apart, and only 79 % of the synthetic test lesions contain one, which caps
    the pointing game below 0.8 for any CAM. At 14 x 14 the cap is 0.99. Stages 6 to 8 then
    run on 4x the positions: the network costs about 2x the FLOPs (0.77 -> 1.53 GFLOP).
    """
    model = _torchvision("efficientnet_b0")(num_classes)
    set_output_stride(model, 16)
    return model


def set_output_stride(model: nn.Module, stride: int) -> None:
    """Switch a torchvision EfficientNet-B0 between output stride 32 (as published) and 16, in
    place. Both use the same weights, so a network trained at one runs at the other:
    ``make demo-model`` trains at 32 and fine-tunes at 16 (DeepLab's way to a denser output)."""
    if stride not in (16, 32):
        raise ValueError(f"output stride must be 16 or 32, not {stride}")
    try:
        # stage 6 -> its first MBConv -> the depthwise Conv2dNormActivation -> the convolution
        opening = model.features[6][0].block[1][0]
    except (AttributeError, IndexError, TypeError):
        raise ValueError(f"{type(model).__name__} is not a torchvision EfficientNet-B0") from None
    opening.stride = (2, 2) if stride == 32 else (1, 1)


# The demo model's network, built here; every other torchvision name is torchvision's own.
DEMO_ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "efficientnet_b0_os16": _efficientnet_b0_os16,
}


def torchvision_names() -> list[str]:
    """torchvision's classification models (not its detection, segmentation or video ones)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _timm_arch(timm_name: str) -> Arch:
    def build(num_classes: int) -> nn.Module:
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes)

    return Arch(name=TIMM_PREFIX + timm_name, build=build)


def known_architectures() -> str:
    """The supported names, for messages."""
    return (
        "any torchvision classification model (e.g. resnet18, densenet121, convnext_tiny, "
        f"mobilenet_v3_large), {', '.join(DEMO_ARCHS)}, or {TIMM_PREFIX}<timm model name> "
        "(needs btxrd[timm])"
    )


def _shown(name: str) -> str:
    # The name comes from a file: quoted (control characters escaped) and kept short.
    return repr(name if len(name) <= 80 else name[:80] + "...")


def get_arch(name: str) -> Arch:
    """A torchvision classification model's name, ``efficientnet_b0_os16``, or
    ``timm/<name>``, a plain model name that the installed timm lists.

    ``ModelError`` for anything else (the caller adds which file named it).
    """
    if name in DEMO_ARCHS:
        return Arch(name=name, build=DEMO_ARCHS[name])
    if name in torchvision_names():
        return Arch(name=name, build=_torchvision(name))
    if not name.startswith(TIMM_PREFIX):
        raise ModelError(f"unknown architecture {_shown(name)}; known: {known_architectures()}")
    timm_name = name.removeprefix(TIMM_PREFIX)
    if not _TIMM_NAME.fullmatch(timm_name):
        raise ModelError(
            f"architecture {_shown(name)} is not a plain timm model name (hub, file and URL "
            f"names are refused); known: {known_architectures()}"
        )
    try:
        import timm
    except ImportError:
        raise ModelError(
            f"architecture {_shown(name)} needs timm, which is not installed: "
            f"{install_hint('timm')}"
        ) from None
    # A tag (`.ra_in1k`) only names pretrained weights, but timm refuses one it does not know.
    listed = timm.list_pretrained() if "." in timm_name else timm.list_models()
    if timm_name not in listed:
        raise ModelError(
            f"unknown architecture {_shown(name)}: timm {timm.__version__} has no model "
            f"{_shown(timm_name)}; known: {known_architectures()}"
        )
    return _timm_arch(timm_name)
