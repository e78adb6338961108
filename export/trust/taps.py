"""Where the out-of-distribution score looks: the feature map after every stage of the network,
each global-average-pooled ("taps"). Low stages see brightness, contrast and texture (noise, a
flat field, an inverted radiograph), the last sees what the head sees (`make trust` measured
that the last one alone lets most flat fields and inverted radiographs through).

Known layouts: torchvision EfficientNet (every block of ``features``) and ResNet (the stem's
pooling output, then ``layer1`` to ``layer4``). Any other network has one tap, its penultimate
vector: the classifier's input (the pooled features, or what its head makes of them).
"""

from __future__ import annotations

import torch
from torch import nn

from btxrd.export.archs import Arch
from btxrd.export.parts import catch


def tap_modules(model: nn.Module) -> list[nn.Module] | None:
    """The modules whose outputs are the taps, in order; None for an unknown layout."""
    features = getattr(model, "features", None)
    if (
        isinstance(features, nn.Sequential)
        and hasattr(model, "classifier")
        and type(model).__name__ == "EfficientNet"
    ):
        return list(features)
    if all(hasattr(model, n) for n in ("conv1", "maxpool", "layer1", "layer4", "fc")):
        return [model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4]
    return None


@torch.no_grad()
def pooled_taps(model: nn.Module, arch: Arch, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The logits and every tap (N, C_i), from the model's own forward."""
    assert arch.parts is not None
    with catch(model, arch.parts, tap_modules(model)) as caught:
        logits = model(x)
    return logits, caught.pooled()


def tap_widths(model: nn.Module, arch: Arch, image_size: tuple[int, int]) -> tuple[int, ...]:
    """Channels per tap (the pooled feature vector is their concatenation)."""
    _, taps = pooled_taps(model.eval(), arch, torch.zeros(1, 3, *image_size))
    return tuple(int(tap.shape[1]) for tap in taps)
