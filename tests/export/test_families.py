"""Any classifier a user trained exports: torchvision and timm families beyond the demo's, each
with parity against PyTorch, a working ``btxrd-run``, maps equal to pytorch-grad-cam's Grad-CAM
on the same layer, and calibration and the gate for one network of each kind of head.

Random weights (with varied BatchNorm statistics, so outputs differ between images), one small
input each (64 px; the ViT at its native 224), one parity source (nine derived files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("timm")

from btxrd.export.checkpoint import save_checkpoint  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.runtime.cli.run import main as run_main  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]
CLASSES = ("Normal", "Benign", "Malignant")

# arch, input size, how the file computes Grad-CAM (the head after the layer decides), and
# whether the export fits calibration and the gate. The gate reads what the classifier reads,
# through the same hook whatever the head; it is fitted on one network of each kind of
# penultimate vector (pooled map, MLP output, normalised pooled map, class token) to keep the
# suite's time down: each fit costs one more export of the network.
FAMILIES = [
    ("densenet121", 64, "gradient", True),  # a ReLU after the last layer's output (in place)
    ("mobilenet_v3_large", 64, "gradient", True),  # an MLP head
    ("regnet_y_800mf", 64, "linear", False),
    ("convnext_tiny", 64, "gradient", False),  # LayerNorm + Linear head
    ("timm/densenet121", 64, "linear", False),
    ("timm/convnext_atto", 64, "gradient", True),
    ("timm/efficientnetv2_rw_t", 64, "linear", False),
    ("timm/vit_tiny_patch16_224", 224, "gradient", True),  # tokens on the 14 x 14 patch grid
]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, make_radiograph) -> Path:
    root = tmp_path_factory.mktemp("families") / "data"
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(10):
            array = make_radiograph(48 + 10 * index, 64, seed=100 * index + i)
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def exported(request, make_model, radiograph_dir, labelled, tmp_path_factory):
    arch, size, kind, calibrated = request.param
    folder = tmp_path_factory.mktemp(arch.replace("/", "-"))
    checkpoint = folder / "model.pt"
    model = make_model(arch, image_size=(size, size))
    if arch == "mobilenet_v3_large":
        # Its signal fades through randomly initialised blocks: pooled features differ between
        # images by 1e-7 of their size, float32 noise, on which no gate can be fitted. Smaller
        # BatchNorm variances keep the differences (2e-3) as a trained network has them.
        # Its Grad-CAM is then negative everywhere for every class (no positive evidence, a
        # flat map): class 0's last weights negated give it some, so there is a map to compare.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_var.div_(4)
            model.classifier[-1].weight[0].neg_()
    save_checkpoint(checkpoint, model, arch=arch, class_names=CLASSES, image_size=size)
    out = folder / "model.onnx"
    args = [str(checkpoint), "-o", str(out), "--parity-images", str(radiograph_dir)]
    if calibrated:
        args += ["--calibration-data", str(labelled), "--min-val-per-class", "1"]
    env = {"BTXRD_PARITY_SOURCES": "1", "BTXRD_MODEL": None, "BTXRD_CONFIG": None}
    result = CliRunner().invoke(export_main, args, env=env)
    return {
        "arch": arch,
        "kind": kind,
        "calibrated": calibrated,
        "checkpoint": checkpoint,
        "onnx": out,
        "result": result,
    }


def test_exports_with_parity_and_where_fitted_calibration_and_the_gate(exported) -> None:
    result = exported["result"]
    assert result.exit_code == 0, result.stderr
    report = json.loads(exported["onnx"].with_suffix(".parity.json").read_text())
    assert report["passed"] and report["max_abs_diff"] <= 1e-4
    info = CliRunner().invoke(run_main, ["--model", str(exported["onnx"]), "--info", "--json"])
    document = json.loads(info.stdout)
    assert document["cam"]["kind"] == exported["kind"]
    if not exported["calibrated"]:
        return
    assert report["calibrated_max_abs_diff"] <= 1e-4
    assert report["ood_max_relative_diff"] <= report["ood_relative_tolerance"]
    assert document["trust"]["calibration"]["temperature"] > 0
    assert document["trust"]["ood_gate"]["threshold"] is not None
    assert report["labelled_data"]["num_images"] == 30


def test_btxrd_run_classifies_with_it(exported, radiograph_dir) -> None:
    image = next(radiograph_dir.iterdir())
    argv = ["--model", str(exported["onnx"]), str(image), "--json", "--no-ood-gate"]
    result = CliRunner().invoke(run_main, argv)
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)["results"]
    assert record["prediction"] in CLASSES and abs(sum(record["scores"].values()) - 1) < 1e-5


def test_the_edge_cam_equals_pytorch_grad_cam_on_the_same_layer(
    exported, radiograph_dir, assert_cam_is_grad_cam
) -> None:
    assert_cam_is_grad_cam(exported["checkpoint"], exported["onnx"], next(radiograph_dir.iterdir()))
