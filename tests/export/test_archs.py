"""Architectures a checkpoint may name: an allowlist checked before timm sees the name, and a
refusal that is one line naming the checkpoint, the architecture and the known ones (exit 3)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from btxrd.export.archs import get_arch  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.runtime.errors import ModelError  # noqa: E402
from btxrd.runtime.install import install_hint  # noqa: E402

pytestmark = pytest.mark.torch
CLASSES = ["Normal", "Benign", "Malignant"]
KNOWN = "known: any torchvision classification model (e.g. resnet18"


def _checkpoint(path: Path, arch: str) -> Path:
    """A checkpoint naming ``arch``; no weights are needed to be refused before loading them."""
    torch.save(
        {
            "model_state_dict": {},
            "class_names": CLASSES,
            "config": {"arch": arch, "image_size": 64},
        },
        path,
    )
    return path


def _export(tmp_path: Path, arch: str):
    path = _checkpoint(tmp_path / "m.pt", arch)
    out = tmp_path / "out" / "m.onnx"
    result = CliRunner().invoke(export_main, ["--checkpoint", str(path), "--out", str(out)])
    return result, path, out


def _assert_refused(result, path: Path, out: Path, *causes: str) -> None:
    assert result.exit_code == 3, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("btxrd-export: error: ")
    assert "internal error" not in line and "Traceback" not in result.stderr
    assert str(path) in line
    for cause in causes:
        assert cause in line
    assert not out.exists()


@pytest.fixture
def timm_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name that reaches ``timm.create_model`` (the real one still runs)."""
    timm = pytest.importorskip("timm")
    calls: list[str] = []
    real = timm.create_model

    def spy(name: str, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    return calls


@pytest.mark.parametrize(
    ("arch", "cause"),
    [
        ("timm/hf-hub:someone/model", "not a plain timm model name"),
        ("timm/local-dir:/tmp/weights", "not a plain timm model name"),
        ("hf-hub:someone/model", "not a plain timm model name"),
        ("timm/https://example.org/m", "not a plain timm model name"),
        ("timm/EfficientNet_B0", "not a plain timm model name"),
        ("timm/resnet18\n", "not a plain timm model name"),
        ("nonsense_net", "has no model 'nonsense_net'"),
        ("timm/resnet18.no_such_tag", "has no model 'resnet18.no_such_tag'"),
    ],
    ids=["hf-hub", "local-dir", "bare-hf-hub", "url", "capitals", "newline", "unknown", "bad-tag"],
)
def test_export_refuses_architectures_btxrd_does_not_support(
    tmp_path: Path, timm_calls: list[str], arch: str, cause: str
) -> None:
    result, path, out = _export(tmp_path, arch)
    _assert_refused(result, path, out, cause, KNOWN)
    assert timm_calls == []  # refused before timm could contact a hub or read a folder


def test_export_refuses_weights_that_fit_no_network_of_the_name(
    tmp_path: Path, timm_calls: list[str]
) -> None:
    # The checkpoint names a real timm network but holds no weights for it.
    result, path, out = _export(tmp_path, "timm/vit_tiny_patch16_224")
    _assert_refused(result, path, out, "weights do not fit timm/vit_tiny_patch16_224")


def test_export_names_the_extra_when_timm_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    result, path, out = _export(tmp_path, "timm/efficientnet_b0")
    _assert_refused(result, path, out, "needs timm", install_hint("timm"))


def test_a_very_long_architecture_name_is_shortened(tmp_path: Path) -> None:
    result, path, out = _export(tmp_path, "x" * 10_000)
    _assert_refused(result, path, out, "...")
    assert len(result.stderr) < 1000


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0_os16"])
def test_supported_torchvision_names_resolve(name: str) -> None:
    assert get_arch(name).name == name


def test_a_listed_timm_name_and_tag_resolve() -> None:
    pytest.importorskip("timm")
    assert get_arch("timm/resnet18").name == "timm/resnet18"
    assert get_arch("timm/resnet18.a1_in1k").name == "timm/resnet18.a1_in1k"


def test_get_arch_raises_model_error() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'resnet9000'"):
        get_arch("resnet9000")
