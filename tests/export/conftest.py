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


def varied_model(
    arch: str, num_classes: int = 3, seed: int = 0, image_size: tuple[int, int] = (64, 64)
) -> torch.nn.Module:
    """A randomly initialised network whose outputs differ clearly between images.

    Fresh networks give near-uniform probabilities, which would make parity trivially true;
    random BatchNorm statistics and a scaled head make every image score differently.
    """
    torch.manual_seed(seed)
    built = get_arch(arch)
    model = built.build(num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    head = built.locate(model, image_size).head(model)
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
    """Factory fixture: ``make_model(arch, num_classes=3, seed=0, image_size=(64, 64))``."""
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


@pytest.fixture(scope="session")
def assert_cam_is_grad_cam():
    """``check(checkpoint, onnx_file, image)``: every class's ``cam`` output of the exported
    file, scaled as pytorch-grad-cam scales its maps, equals pytorch-grad-cam's GradCAM on the
    layer the file names, to 1e-4; a class whose map has no positive evidence is flat on both
    sides, and at least one class must have a map to compare."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from btxrd.export.checkpoint import build_model, load_checkpoint
    from btxrd.runtime.decode.image import load_image
    from btxrd.runtime.model.classifier import Classifier
    from btxrd.runtime.model.preprocess import preprocess

    def min_max(cam: np.ndarray) -> np.ndarray:
        # pytorch-grad-cam's scale_cam_image: min-max with its epsilon (per layer, then again).
        cam = cam - cam.min()
        return cam / (1e-7 + cam.max())

    def check(checkpoint: Path, onnx_file: Path, image: Path) -> None:
        classifier = Classifier(onnx_file, ood_gate=False)
        assert classifier.info.has_cam
        source = classifier.info.metadata.cam
        model, arch = build_model(load_checkpoint(checkpoint), source.target_layer)
        parts = arch.parts
        prediction = classifier.predict(image, with_cam=True)
        x = torch.from_numpy(
            preprocess(load_image(image), classifier.info.metadata.preprocessing)[None]
        )
        layer = parts.target_layer(model)
        reshape = parts.to_grid if parts.prefix_tokens is not None else None
        compared = 0
        for target in range(len(classifier.class_names)):
            with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
                # After pytorch-grad-cam's hooks: the layer's output goes on as a copy, so an
                # in-place ReLU after it (torchvision DenseNet) leaves what Grad-CAM read alone.
                handle = layer.register_forward_hook(lambda _m, _a, out: out.clone())
                try:
                    expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
                finally:
                    handle.remove()
            raw = prediction.cam[target]
            if raw.max() - raw.min() <= 1e-12:  # no positive evidence: pytorch-grad-cam says 0
                assert np.abs(expected).max() <= 1e-4
                continue
            size = (x.shape[-1], x.shape[-2])
            got = min_max(cv2.resize(min_max(raw).astype(np.float32), size))
            assert np.abs(got - expected).max() <= 1e-4, (onnx_file, target)
            compared += 1
        assert compared, "every class map was flat: nothing was compared"

    return check
