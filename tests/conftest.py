"""Shared fixtures: a tiny exported model, the shipped demo model, radiograph-like phantoms.

Fixtures that need torch import it behind ``pytest.importorskip``, so the runtime-only
environment (no torch) still collects and runs everything else. Every test that uses a
torch-built fixture is marked ``torch`` automatically, so ``pytest -m "not torch"`` deselects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from labelme_files import write_labelme
from PIL import Image

from btxrd.runtime.decode.inputs import collect_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("Normal", "Benign", "Malignant")
TINY_IMAGE_SIZE = 64

# Fixtures built with torch; a test using any of them needs the [export] extras.
TORCH_FIXTURES = frozenset({"tiny_onnx", "tiny_model_proto", "tiny_torch_model"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if TORCH_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)


@dataclass(frozen=True)
class TinyModel:
    """The tiny network in PyTorch and where its checkpoint lives."""

    model: object  # torch.nn.Module, eval mode
    checkpoint: Path


@pytest.fixture(scope="session")
def tiny_torch_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A resnet18 with 3 classes whose outputs are far from uniform, saved as a checkpoint."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from btxrd.export.archs import get_arch
    from btxrd.export.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = get_arch("resnet18").build(len(CLASS_NAMES))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        model.fc.weight.mul_(20.0)
    model.eval()
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
    save_checkpoint(
        path, model, arch="resnet18", class_names=CLASS_NAMES, image_size=TINY_IMAGE_SIZE
    )
    return TinyModel(model=model, checkpoint=path)


@pytest.fixture(scope="session")
def tiny_model_proto(tiny_torch_model: TinyModel):
    """The tiny checkpoint exported the way ``btxrd-export`` does it, as an ``onnx.ModelProto``."""
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from btxrd.export.checkpoint import build_model, load_checkpoint
    from btxrd.export.onnx_export import build_metadata, export_model_proto, finalise
    from btxrd.export.parity import reference_probabilities
    from btxrd.runtime.model.selftest import SELFTEST_TOLERANCE, selftest_images

    checkpoint = load_checkpoint(tiny_torch_model.checkpoint)
    model, arch = build_model(checkpoint)
    prep = checkpoint.preprocessing
    images = selftest_images()
    probs = reference_probabilities(model, [im.convert("RGB") for im in images.values()], prep)
    reference = {
        "tolerance": SELFTEST_TOLERANCE,
        "images": {name: [float(v) for v in row] for name, row in zip(images, probs, strict=True)},
    }
    metadata = build_metadata(checkpoint, arch, reference, None)
    data = finalise(export_model_proto(model, arch, prep.image_size), metadata)
    return onnx.load_from_string(data)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model_proto, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported btxrd model file (resnet18, 3 classes, 64 x 64 input, CAM output)."""
    path = tmp_path_factory.mktemp("tiny-onnx") / "tiny.onnx"
    path.write_bytes(tiny_model_proto.SerializeToString())
    return path


def image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder`` as ``btxrd-run --dir`` finds them: every suffix the
    runtime reads (``.jpeg`` and ``.jpg`` alike), sorted, hidden files skipped."""
    return collect_folder(folder, recursive=False)


@pytest.fixture(scope="session")
def find_images():
    """``image_files`` as a fixture, for tests that list a folder of their own."""
    return image_files


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The shipped sample radiographs (models/samples), all of them; empty if not present."""
    folder = REPO_ROOT / "models" / "samples"
    return image_files(folder) if folder.is_dir() else []


@pytest.fixture(scope="session")
def demo_onnx() -> Path:
    """The shipped demo model, for tests where a trained model matters."""
    path = (REPO_ROOT / "models" / "btxrd-demo.onnx").resolve()
    if not path.is_file():
        pytest.skip("demo model not trained yet")
    return path


def phantom_array(height: int = 96, width: int = 80, seed: int = 0, depth: int = 255) -> np.ndarray:
    """A radiograph-like field: dark soft tissue, one bright bone bar with a cortex, noise.

    Values span 0..``depth`` (255 for 8-bit, 4095 for a 12-bit detector, 65535 for 16-bit).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    centre = width * (0.45 + 0.1 * np.sin(y / height * np.pi))
    bone = np.exp(-(((x - centre) / (width * 0.12)) ** 2))
    cortex = np.exp(-(((np.abs(x - centre) - width * 0.1) / (width * 0.03)) ** 2))
    tissue = 0.25 * np.exp(-(((x - width / 2) / (width * 0.4)) ** 2))
    field = 0.05 + tissue + 0.45 * bone + 0.25 * cortex + rng.normal(0, 0.03, (height, width))
    field = (field - field.min()) / (field.max() - field.min())
    return np.rint(field * depth).astype(np.uint8 if depth <= 255 else np.uint16)


@pytest.fixture(scope="session")
def make_phantom():
    """``phantom_array`` as a fixture, for tests that draw their own phantoms."""
    return phantom_array


@pytest.fixture
def phantom_images(tmp_path: Path) -> dict[str, Path]:
    """Small radiograph-like files of the kinds users have, keyed by kind."""
    folder = tmp_path / "phantoms"
    folder.mkdir()
    gray = Image.fromarray(phantom_array(seed=1))
    tinted = Image.merge("RGB", [gray, gray.point(lambda v: int(v * 0.9)), gray])
    paths = {
        "gray_jpeg": folder / "gray.jpeg",
        "rgb_jpeg": folder / "rgb.jpg",
        "gray8_png": folder / "gray8.png",
        "gray16_png": folder / "gray16.png",
    }
    gray.save(paths["gray_jpeg"], quality=92)
    tinted.save(paths["rgb_jpeg"], quality=92)
    Image.fromarray(phantom_array(seed=2)).save(paths["gray8_png"])
    Image.fromarray(phantom_array(seed=3, depth=4095)).save(paths["gray16_png"])
    return paths


@pytest.fixture
def labelme(tmp_path: Path):
    """Factory: ``labelme(width, height, shapes, name="a.json")`` -> path."""

    def make(width: int, height: int, shapes, name: str = "a.json") -> Path:
        return write_labelme(tmp_path / name, width, height, shapes)

    return make
