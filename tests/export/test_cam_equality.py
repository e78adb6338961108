"""The ONNX graph's `cam` output equals pytorch-grad-cam's GradCAM on the same layer.

For a global-average-pool + linear head, Grad-CAM's channel weights are W[c, k] / (h * w), so
ReLU(einsum(A, W)) is Grad-CAM up to a positive scale, which min-max normalisation removes.
Reference: pytorch-grad-cam itself (ClassifierOutputTarget, the architecture's target layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("pytorch_grad_cam")

from btxrd.export.checkpoint import build_model, load_checkpoint  # noqa: E402
from btxrd.export.onnx_export import build_metadata, export_model_proto, finalise  # noqa: E402
from btxrd.runtime.decode.image import load_image  # noqa: E402
from btxrd.runtime.model.classifier import Classifier  # noqa: E402
from btxrd.runtime.model.preprocess import preprocess  # noqa: E402

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[2]


def grad_cam_reference(model, layer, x: np.ndarray, target: int) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=torch.from_numpy(x[None]), targets=[ClassifierOutputTarget(target)])
    assert maps.shape == (1, *x.shape[1:]) and np.isfinite(maps).all() and maps.max() > 0
    return maps[0]


def _min_max(cam: np.ndarray) -> np.ndarray:
    cam = cam - cam.min()
    return cam / (1e-7 + cam.max())


def normalise_like_grad_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # pytorch-grad-cam's scale_cam_image (min-max with its epsilon, cv2 bilinear resize) per
    # layer, then once more when it aggregates the layers: the resized map rarely spans [0, 1]
    # exactly, so that second min-max matters.
    return _min_max(cv2.resize(_min_max(cam).astype(np.float32), size))


def assert_cams_equal(checkpoint: Path, onnx_path: Path, images: list[Path]) -> None:
    model, arch = build_model(load_checkpoint(checkpoint))
    classifier = Classifier(onnx_path)
    prep = classifier.info.metadata.preprocessing
    height, width = prep.image_size
    for path in images:
        prediction = classifier.predict(path, with_cam=True)
        target = classifier.class_names.index(prediction.prediction)
        x = preprocess(load_image(path), prep)
        expected = grad_cam_reference(model, arch.target_layer(model), x, target)
        got = normalise_like_grad_cam(prediction.cam[target], (width, height))
        assert np.abs(got - expected).max() <= 1e-3, path.name


def test_cam_output_equals_pytorch_grad_cam_on_a_tiny_model(
    tiny_checkpoint: Path, radiograph_dir: Path, find_images, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    model, arch = build_model(ckpt)
    onnx_path = tmp_path / "tiny.onnx"
    data = finalise(export_model_proto(model, arch, (64, 64)), build_metadata(ckpt, arch, {}, None))
    onnx_path.write_bytes(data)
    assert_cams_equal(tiny_checkpoint, onnx_path, find_images(radiograph_dir))


def test_cam_output_equals_pytorch_grad_cam_on_the_demo_model(sample_images: list[Path]) -> None:
    checkpoint, onnx_path = ROOT / "models/btxrd-demo.pt", ROOT / "models/btxrd-demo.onnx"
    if not (checkpoint.exists() and onnx_path.exists() and sample_images):
        pytest.skip("demo model not in this checkout")
    assert_cams_equal(checkpoint, onnx_path, sample_images)
