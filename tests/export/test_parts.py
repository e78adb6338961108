"""``btxrd.export.parts``: the classifier, the Grad-CAM layer and the way the graph computes
Grad-CAM, found from the network itself, for networks whose structure the finder has to read
differently; ``--target-layer`` and the refusals."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from btxrd.export.checkpoint import save_checkpoint  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.export.parts import CAM_GRADIENT, CAM_LINEAR, find_parts  # noqa: E402
from btxrd.runtime.cli.run import main as run_main  # noqa: E402
from btxrd.runtime.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.torch


def _torchvision(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=3).eval()


@pytest.mark.parametrize(
    ("name", "target", "classifier", "kind"),
    [
        # The block container, not its last BatchNorm, whose output the in-place residual
        # addition overwrites.
        ("resnet18", "layer4", "fc", CAM_LINEAR),
        ("efficientnet_b0", "features", "classifier.1", CAM_LINEAR),
        # relu(inplace=True) after `features`: pooled features are not the layer's average.
        ("densenet121", "features", "classifier", CAM_GRADIENT),
        ("mobilenet_v3_large", "features", "classifier.3", CAM_GRADIENT),
        ("convnext_tiny", "features", "classifier.2", CAM_GRADIENT),
        # Its last feature map is channels-last; the Permute module makes it N x C x h x w.
        ("swin_t", "permute", "head", CAM_LINEAR),
    ],
)
def test_parts_are_found_from_the_network(name, target, classifier, kind) -> None:
    parts = find_parts(_torchvision(name), (64, 64))
    assert (parts.target, parts.classifier, parts.cam) == (target, classifier, kind)
    assert parts.prefix_tokens is None and parts.chosen_by == "found"


def test_a_vit_takes_its_last_blocks_first_norm_with_tokens_on_the_patch_grid() -> None:
    parts = find_parts(_torchvision("vit_b_16"), (224, 224))
    assert parts.target == "encoder.layers.encoder_layer_11.ln_1"
    assert (parts.grid, parts.prefix_tokens, parts.cam) == ((14, 14), 1, CAM_GRADIENT)
    tokens = torch.arange(2 * 197 * 5, dtype=torch.float32).reshape(2, 197, 5)
    grid = parts.to_grid(tokens)
    assert grid.shape == (2, 5, 14, 14)
    # Token 1 (the first after the class token) is the top-left cell.
    assert torch.equal(grid[:, :, 0, 0], tokens[:, 1, :])


def test_a_given_layer_is_used_and_said_to_be_given() -> None:
    parts = find_parts(_torchvision("resnet18"), (64, 64), target="layer3")
    assert (parts.target, parts.cam, parts.chosen_by, parts.grid) == (
        "layer3",
        CAM_GRADIENT,
        "given",
        (4, 4),
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("layer9", "--target-layer 'layer9' is not a module of ResNet"),
        ("avgpool", "Grad-CAM needs N x K x h x w feature maps or N x T x D tokens"),
        ("fc", "does not run before the classifier"),
    ],
)
def test_a_given_layer_that_cannot_be_used_is_refused(target, message) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_parts(_torchvision("resnet18"), (64, 64), target=target)


def test_a_network_whose_scores_do_not_come_from_a_linear_layer_is_refused() -> None:
    with pytest.raises(ModelError, match="class scores do not come from a linear layer"):
        find_parts(_torchvision("squeezenet1_0"), (64, 64))


def test_export_with_a_target_layer_records_it_and_draws_grad_cam_there(
    make_model, radiograph_dir, tmp_path, assert_cam_is_grad_cam
) -> None:
    checkpoint = tmp_path / "m.pt"
    classes = ("Normal", "Benign", "Malignant")
    save_checkpoint(checkpoint, make_model("resnet18"), arch="resnet18", class_names=classes,
                    image_size=64)  # fmt: skip
    out = tmp_path / "m.onnx"
    args = [str(checkpoint), "-o", str(out), "--parity-images", str(radiograph_dir)]
    result = CliRunner().invoke(export_main, [*args, "--target-layer", "layer3"])
    assert result.exit_code == 0, result.stderr
    info = CliRunner().invoke(run_main, ["--model", str(out), "--info", "--json"])
    cam = json.loads(info.stdout)["cam"]
    assert (cam["target_layer"], cam["kind"], cam["target_chosen"], cam["grid"]) == (
        "layer3",
        "gradient",
        "given",
        [4, 4],
    )
    summary = CliRunner().invoke(run_main, ["--model", str(out), "--info"]).stdout
    assert "Grad-CAM in the graph on layer3 (4 x 4, given by --target-layer;" in summary
    # Convolutions between the layer and the head: their gradient is a transposed convolution.
    assert_cam_is_grad_cam(checkpoint, out, next(radiograph_dir.iterdir()))


def test_export_with_an_unknown_target_layer_is_one_line(make_model, tmp_path) -> None:
    checkpoint = tmp_path / "m.pt"
    save_checkpoint(checkpoint, make_model("resnet18"), arch="resnet18",
                    class_names=("a", "b", "c"), image_size=64)  # fmt: skip
    result = CliRunner().invoke(export_main, [str(checkpoint), "--target-layer", "layer9"])
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert str(checkpoint) in line and "--target-layer 'layer9' is not a module" in line
