"""Where the out-of-distribution score looks: the feature map after every stage of the network,
each global-average-pooled ("taps"). Low stages see brightness, contrast and texture (noise, a
flat field, an inverted radiograph), the last sees what the head sees (`make trust` measured
that the last one alone lets most flat fields and inverted radiographs through).

Known layouts: torchvision EfficientNet (every block of ``features``) and ResNet (the stem's
pooling output, then ``layer1`` to ``layer4``). Any other network has one tap, its last feature
map. The last tap is always ``arch.features(model, x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from btxrd.export.archs import Arch


def tap_modules(model: nn.Module) -> list[nn.Module] | None:
    """The modules whose outputs are the taps, in order; None for an unknown layout."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and hasattr(model, "classifier"):
        return list(features)
    if all(hasattr(model, n) for n in ("conv1", "maxpool", "layer1", "layer4", "fc")):
        return [model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4]
    return None


def feature_maps(model: nn.Module, arch: Arch, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tap's feature map (N, C_i, h_i, w_i), computed stage by stage (the graph's path)."""
    modules = tap_modules(model)
    if modules is None:
        return [arch.features(model, x)]
    maps = []
    if hasattr(model, "layer1"):  # ResNet: the stem first
        x = model.relu(model.bn1(model.conv1(x)))
    for module in modules:
        x = module(x)
        maps.append(x)
    return maps


def tap_widths(model: nn.Module, arch: Arch, image_size: tuple[int, int]) -> tuple[int, ...]:
    """Channels per tap (the pooled feature vector is their concatenation)."""
    with torch.no_grad():
        maps = feature_maps(model.eval(), arch, torch.zeros(1, 3, *image_size))
    return tuple(int(m.shape[1]) for m in maps)
