"""The checkpoint contract: safe loading, our layout, the predecessor's layout, clear refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from btxrd.export.checkpoint import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from btxrd.runtime.errors import ModelError  # noqa: E402

CLASSES = ("Normal", "Benign", "Malignant")

pytestmark = pytest.mark.torch


def test_round_trip_gives_the_same_network(tmp_path: Path, make_model) -> None:
    model = make_model("resnet18")
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        model,
        arch="resnet18",
        class_names=CLASSES,
        image_size=96,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    ckpt = load_checkpoint(path)
    assert ckpt.class_names == CLASSES
    assert ckpt.preprocessing.image_size == (96, 96)
    assert ckpt.preprocessing.mean == (0.5, 0.5, 0.5)
    rebuilt, arch = build_model(ckpt)
    assert arch.name == "resnet18" and not rebuilt.training
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_output_stride_16_efficientnet_round_trips_with_a_finer_cam_grid(tmp_path: Path) -> None:
    """Same weights layout as efficientnet_b0, so the checkpoint's arch name alone must decide
    which network is rebuilt; the rebuilt one keeps its 14 x 14 last feature map."""
    from btxrd.export.archs import get_arch

    plain, os16 = get_arch("efficientnet_b0"), get_arch("efficientnet_b0_os16")
    torch.manual_seed(0)
    model = os16.build(len(CLASSES)).eval()
    assert model.state_dict().keys() == plain.build(len(CLASSES)).state_dict().keys()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch=os16.name, class_names=CLASSES, image_size=224)
    rebuilt, arch = build_model(load_checkpoint(path))
    assert arch.name == "efficientnet_b0_os16"
    assert arch.parts.grid == (14, 14)
    assert plain.locate(plain.build(len(CLASSES)), (224, 224)).parts.grid == (7, 7)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_output_stride_switch_refuses_other_networks(make_model) -> None:
    from btxrd.export.archs import set_output_stride

    with pytest.raises(ValueError, match="not a torchvision EfficientNet-B0"):
        set_output_stride(make_model("resnet18"), 16)
    with pytest.raises(ValueError, match="16 or 32"):
        set_output_stride(make_model("efficientnet_b0"), 8)


class _WritesAFile:
    """A pickle payload: unpickling it runs `touch`. Loading must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"model_state_dict": {}, "class_names": list(CLASSES), "x": _WritesAFile(marker)}, path
    )
    with pytest.raises(ModelError) as error:
        load_checkpoint(path)
    assert not marker.exists()
    assert "refused" in str(error.value) and "system" in str(error.value)


def test_checkpoint_holding_numpy_objects_names_the_unsafe_globals(tmp_path: Path) -> None:
    path = tmp_path / "np.pt"
    torch.save(
        {
            "model_state_dict": {},
            "class_names": list(CLASSES),
            "class_weights": np.array([1.0, 2.0, 3.0]),
        },
        path,
    )
    with pytest.raises(ModelError, match="numpy"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"not a zip or pickle at all", "not a torch checkpoint")],
)
def test_unreadable_checkpoints(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(path)


def test_weights_for_another_class_count_say_which_keys_differ(tmp_path: Path, make_model) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        make_model("resnet18", num_classes=4),
        arch="resnet18",
        class_names=CLASSES,
        image_size=64,
    )
    with pytest.raises(ModelError, match=r"fc\.weight: checkpoint \(4, 512\) vs model \(3, 512\)"):
        build_model(load_checkpoint(path))


def test_weights_for_another_architecture_are_refused(tmp_path: Path, make_model) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(
        path, make_model("resnet18"), arch="resnet50", class_names=CLASSES, image_size=64
    )
    with pytest.raises(ModelError, match="do not fit resnet50"):
        build_model(load_checkpoint(path))


def test_predecessor_layout_loads_as_timm_efficientnet(
    tmp_path: Path, make_predecessor_checkpoint
) -> None:
    path = make_predecessor_checkpoint(tmp_path / "best_stratified.pt")
    wrapper = torch.nn.Module()
    wrapper.model = make_predecessor_checkpoint.network
    ckpt = load_checkpoint(path)
    model, arch = build_model(ckpt)
    assert arch.name == "timm/efficientnet_b0"
    assert ckpt.preprocessing.image_size == (224, 224)
    assert type(arch.target_layer(model)).__name__ == "BatchNormAct2d"  # timm's bn2
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), wrapper.model(x))


# --- the same refusals through `btxrd-export`: exit 3, one line, nothing written -------------


def _evil(path: Path, marker: Path, make_model) -> None:
    torch.save(
        {"model_state_dict": {}, "class_names": list(CLASSES), "x": _WritesAFile(marker)}, path
    )


def _numpy(path: Path, marker: Path, make_model) -> None:
    torch.save({"model_state_dict": {}, "class_names": list(CLASSES), "w": np.ones(3)}, path)


def _truncated(path: Path, marker: Path, make_model) -> None:
    save_checkpoint(
        path, make_model("resnet18"), arch="resnet18", class_names=CLASSES, image_size=64
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _four_classes(path: Path, marker: Path, make_model) -> None:
    model = make_model("resnet18", num_classes=4)
    save_checkpoint(path, model, arch="resnet18", class_names=CLASSES, image_size=64)


def _other_arch(path: Path, marker: Path, make_model) -> None:
    save_checkpoint(
        path, make_model("resnet18"), arch="resnet50", class_names=CLASSES, image_size=64
    )


def _zip_bomb(path: Path, marker: Path, make_model) -> None:
    """A real checkpoint with one tensor file swapped for 256 MiB of zeros, deflated to 256 KB."""
    import zipfile

    _good(path, marker, make_model)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename.endswith("/data/0"):
                archive.writestr(info.filename, bytes(256 * 1024**2), zipfile.ZIP_DEFLATED)
            else:
                archive.writestr(info, data)


def _good(path: Path, marker: Path, make_model) -> None:
    save_checkpoint(
        path, make_model("resnet18"), arch="resnet18", class_names=CLASSES, image_size=64
    )


def _std_infinite(path: Path, marker: Path, make_model) -> None:
    _good(path, marker, make_model)
    raw = torch.load(path, weights_only=True)
    raw["normalization"] = {"mean": [0.5, 0.5, 0.5], "std": [float("inf")] * 3}
    torch.save(raw, path)


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (None, "not found"),
        (_zip_bomb, "refused before loading"),
        (_std_infinite, "finite"),
        (lambda p, m, f: p.write_bytes(b""), "empty"),
        (lambda p, m, f: p.write_bytes(b"not a zip or pickle"), "not a torch checkpoint"),
        (_truncated, "not a torch checkpoint"),
        (_evil, "system"),
        (_numpy, "numpy"),
        (_four_classes, "fc.weight: checkpoint (4, 512) vs model (3, 512)"),
        (_other_arch, "do not fit resnet50"),
    ],
    ids=[
        "missing",
        "zip-bomb",
        "std-infinite",
        "empty",
        "not-a-checkpoint",
        "truncated",
        "runs-code",
        "numpy-objects",
        "class-count",
        "architecture",
    ],
)
def test_btxrd_export_refuses_bad_checkpoints(tmp_path: Path, make_model, make, cause) -> None:
    from click.testing import CliRunner

    from btxrd.export.cli import main as export_main

    path, marker, out = tmp_path / "sent.pt", tmp_path / "pwned", tmp_path / "out.onnx"
    if make is not None:
        make(path, marker, make_model)
    result = CliRunner().invoke(export_main, ["--checkpoint", str(path), "--out", str(out)])
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert str(path) in line and cause in line
    assert not out.exists() and not marker.exists()


@pytest.mark.parametrize("spelling", ["same", "other-spelling", "hard-link"])
def test_btxrd_export_never_writes_over_its_checkpoint(tmp_path: Path, make_model, spelling):
    import os

    from click.testing import CliRunner

    from btxrd.export.cli import main as export_main

    checkpoint = tmp_path / "v.pt"
    _good(checkpoint, tmp_path / "unused", make_model)
    before = checkpoint.read_bytes()
    out = {
        "same": checkpoint,
        "other-spelling": tmp_path / "." / "v.pt",
        "hard-link": tmp_path / "v-link.pt",
    }[spelling]
    if spelling == "hard-link":
        os.link(checkpoint, out)
    result = CliRunner().invoke(export_main, ["--checkpoint", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 3, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error" in line]
    assert "checkpoint" in line and "destroy" in line
    assert checkpoint.read_bytes() == before


def test_a_checkpoint_larger_than_the_limit_is_refused_unread(
    tmp_path: Path, make_model, monkeypatch
):
    from btxrd.export import checkpoint as checkpoint_module

    path = tmp_path / "big.pt"
    _good(path, tmp_path / "unused", make_model)
    monkeypatch.setattr(checkpoint_module, "MAX_CHECKPOINT_BYTES", 1024)  # a 1 KiB limit
    with pytest.raises(ModelError, match="more than"):
        checkpoint_module.load_checkpoint(path)
