"""The CAM methods ``btxrd-explain`` offers (torch-free, so ``--help`` stays fast)."""

from __future__ import annotations

from btxrd.runtime.errors import ConfigError

# Method name on the command line -> pytorch-grad-cam class name.
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
}
# Methods that use no gradients (and ignore the target class).
GRADIENT_FREE = frozenset({"eigencam"})


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return method
