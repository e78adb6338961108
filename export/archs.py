"""Supported architectures: how to build each, where its last feature map and linear head are,
and its Grad-CAM target layer. The one place these facts live (export and explain both use it).

Every supported head is global-average-pool then linear, which is what lets the exported graph
compute Grad-CAM without gradients (see ``btxrd.export.onnx_export``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from btxrd.runtime.errors import ModelError
from btxrd.runtime.install import install_hint

TIMM_PREFIX = "timm/"
# A plain timm model name, optionally with a pretrained tag (`efficientnet_b0.ra_in1k`). Anything
# else is refused before timm sees it: `hf-hub:...` or `local-dir:...` would make it contact a hub
# or read files named by the checkpoint.
_TIMM_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)?")


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[int], nn.Module]  # num_classes -> randomly initialised model
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # last feature map (N, K, h, w)
    head: Callable[[nn.Module], nn.Linear]  # the linear layer after global average pooling
    target_layer: Callable[[nn.Module], nn.Module]  # Grad-CAM layer; its output is `features`


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


def _resnet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


TORCHVISION_ARCHS: dict[str, Arch] = {
    "efficientnet_b0": Arch(
        name="efficientnet_b0",
        build=_torchvision("efficientnet_b0"),
        features=lambda m, x: m.features(x),
        head=lambda m: m.classifier[-1],
        target_layer=lambda m: m.features[-1],
    ),
    "efficientnet_b0_os16": Arch(
        name="efficientnet_b0_os16",
        build=_efficientnet_b0_os16,
        features=lambda m, x: m.features(x),
        head=lambda m: m.classifier[-1],
        target_layer=lambda m: m.features[-1],
    ),
    **{
        name: Arch(
            name=name,
            build=_torchvision(name),
            features=_resnet_features,
            head=lambda m: m.fc,
            target_layer=lambda m: m.layer4[-1],
        )
        for name in ("resnet18", "resnet50")
    },
}


def _timm_target_layer(model: nn.Module) -> nn.Module:
    # The predecessor's choices: bn2 (conv_head + BN + activation) for EfficientNets,
    # the last block of layer4 for ResNets.
    if hasattr(model, "bn2") and hasattr(model, "conv_head"):
        return model.bn2
    if hasattr(model, "layer4"):
        return model.layer4[-1]
    raise ModelError(
        f"no Grad-CAM target layer known for timm's {type(model).__name__}; btxrd supports "
        "timm EfficientNets and ResNets"
    )


def _timm_arch(timm_name: str) -> Arch:
    def build(num_classes: int) -> nn.Module:
        import timm

        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes)

    return Arch(
        name=TIMM_PREFIX + timm_name,
        build=build,
        features=lambda m, x: m.forward_features(x),
        head=lambda m: m.get_classifier(),
        target_layer=_timm_target_layer,
    )


def known_architectures() -> str:
    """The supported names, for messages: torchvision's, then the timm form."""
    return ", ".join([*TORCHVISION_ARCHS, TIMM_PREFIX + "<timm model name> (needs btxrd[timm])"])


def _shown(name: str) -> str:
    # The name comes from a file: quoted (control characters escaped) and kept short.
    return repr(name if len(name) <= 80 else name[:80] + "...")


def get_arch(name: str) -> Arch:
    """``efficientnet_b0``, ``efficientnet_b0_os16``, ``resnet18``, ``resnet50`` (torchvision)
    or ``timm/<name>``, a plain model name that the installed timm lists.

    ``ModelError`` for anything else (the caller adds which file named it).
    """
    if name in TORCHVISION_ARCHS:
        return TORCHVISION_ARCHS[name]
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
