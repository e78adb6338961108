"""Fixtures for export tests: small real torch models with non-uniform outputs, real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from btxrd.export.archs import get_arch  # noqa: E402
from btxrd.export.checkpoint import save_checkpoint  # noqa: E402

CLASSES = ("Normal", "Benign", "Malignant")


def varied_model(arch: str, num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised network whose outputs differ clearly between images.

    Fresh networks give near-uniform probabilities, which would make parity trivially true;
    random BatchNorm statistics and a scaled head make every image score differently.
    """
    torch.manual_seed(seed)
    model = get_arch(arch).build(num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    head = get_arch(arch).head(model)
    with torch.no_grad():
        head.weight.mul_(2)
    return model.eval()


def draw_radiograph(width: int, height: int, seed: int) -> np.ndarray:
    """A bone-like bright bar with a darker medulla over soft tissue, plus noise (uint8)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    centre = width * rng.uniform(0.35, 0.65) + 0.05 * width * np.sin(y / height * 3)
    r = np.abs(x - centre) / (0.12 * width)
    bone = np.where(r < 1, 150 * np.sqrt(np.clip(1 - r**2, 0, 1)) + 60 * (r > 0.6), 0)
    tissue = 50 * np.exp(-(((x - width / 2) / (0.4 * width)) ** 2))
    lesion = 70 * np.exp(
        -(((x - centre) ** 2 + (y - height * rng.uniform(0.3, 0.7)) ** 2) / (0.05 * width) ** 2)
    )
    image = 20 + tissue + bone - lesion * rng.integers(0, 2) + rng.normal(0, 6, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def make_model():
    """Factory fixture: ``make_model(arch, num_classes=3, seed=0)``."""
    return varied_model


@pytest.fixture(scope="session")
def make_radiograph():
    """``draw_radiograph`` as a fixture, for tests that draw their own data sets."""
    return draw_radiograph


@pytest.fixture(scope="session")
def radiograph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("radiographs")
    for i, (w, h) in enumerate([(300, 420), (520, 380)]):
        Image.fromarray(draw_radiograph(w, h, seed=i)).save(folder / f"r{i}.jpeg", quality=92)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path, varied_model("resnet18"), arch="resnet18", class_names=CLASSES, image_size=64, epoch=3
    )
    return path


class _PredecessorFactory:
    """Writes a checkpoint exactly as the predecessor saved them: a timm EfficientNet-B0 wrapped
    as `self.model`, its whole YAML config, optimizer state, class weights as a plain list."""

    network: torch.nn.Module

    def __call__(self, path: Path) -> Path:
        timm = pytest.importorskip("timm")

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=3)

        torch.manual_seed(1)
        wrapper = Wrapper().eval()
        self.network = wrapper.model
        torch.save(
            {
                "epoch": 12,
                "model_state_dict": wrapper.state_dict(),
                "optimizer_state_dict": {},
                "scheduler_state_dict": {},
                "val_loss": 0.61,
                "config": {
                    "model": {
                        "backbone": "efficientnet_b0",
                        "num_classes": 3,
                        "dropout": 0.2,
                        "pretrained": True,
                        "class_names": list(CLASSES),
                    },
                    "data": {"image_size": 224},
                },
                "class_names": list(CLASSES),
                "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                "class_weights": [0.66, 0.82, 3.6],
            },
            path,
        )
        return path


@pytest.fixture
def make_predecessor_checkpoint() -> _PredecessorFactory:
    return _PredecessorFactory()
