"""`btxrd-export`'s command line: the shared help and exit codes, where the parity images come
from, and faults that are one line instead of an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")

from btxrd.export.cli import _parity_sources  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.export.parity import write_parity_images  # noqa: E402
from btxrd.runtime.errors import EXIT_CODES_HELP, InputError  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_documents_exit_codes_and_an_example(flag: str) -> None:
    result = CliRunner().invoke(export_main, [flag])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert " ".join(EXIT_CODES_HELP.split()) in text
    assert "Example: btxrd-export --checkpoint" in text
    assert "--debug" in text


def test_parity_sources_are_the_runtimes_image_files_at_the_top_level(tmp_path: Path) -> None:
    gray = Image.new("L", (32, 32), 128)
    for name in ("b.PNG", "a.jpeg", "c.tif", "d.bmp", ".hidden.jpg"):
        gray.save(tmp_path / name)
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 132)  # Pillow cannot derive parity images
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    gray.save(tmp_path / "sub" / "e.jpg")
    found = _parity_sources(tmp_path)
    assert [p.name for p in found] == ["a.jpeg", "b.PNG", "c.tif"]  # first 3 by default


def test_parity_source_count_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.png", "b.png"):
        Image.new("L", (32, 32)).save(tmp_path / name)
    monkeypatch.setenv("BTXRD_PARITY_SOURCES", "1")
    assert [p.name for p in _parity_sources(tmp_path)] == ["a.png"]


def _export_with_parity_images(checkpoint: Path, out: Path, parity_images: Path):
    """``btxrd-export --checkpoint C --out O --parity-images P`` through click."""
    args = [
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--parity-images",
        str(parity_images),
    ]
    return CliRunner().invoke(export_main, args)


def test_a_bad_parity_source_count_is_a_config_error(
    tmp_path: Path, tiny_checkpoint: Path, radiograph_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTXRD_PARITY_SOURCES", "many")
    result = _export_with_parity_images(tiny_checkpoint, tmp_path / "m.onnx", radiograph_dir)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "BTXRD_PARITY_SOURCES" in line and "'many'" in line


def test_a_folder_without_radiographs_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "scan.dcm").write_bytes(b"\0" * 132)
    result = _export_with_parity_images(tiny_checkpoint, tmp_path / "m.onnx", empty)
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert "no radiographs to check parity on" in line and "--parity-images" in line


def test_an_unreadable_parity_source_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(InputError, match=r"broken\.jpeg: cannot derive parity images"):
        write_parity_images([broken], tmp_path / "images")


def test_the_checkpoint_can_be_given_as_an_argument(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """``btxrd-export CHECKPOINT -o OUT``, like the other commands take their inputs; without
    ``-o`` the ONNX file is named after the checkpoint."""
    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    out = tmp_path / "chosen.onnx"
    result = CliRunner().invoke(export_main, [str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.exists() and f"wrote {out}" in result.stdout + result.stderr
    default = CliRunner().invoke(export_main, [str(checkpoint)])
    assert default.exit_code == 0, default.stderr
    assert (tmp_path / "mine.onnx").exists()
    both = CliRunner().invoke(export_main, [str(checkpoint), "--checkpoint", str(checkpoint)])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_version_names_the_libraries(tmp_path: Path) -> None:
    result = CliRunner().invoke(export_main, ["--version"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "btxrd",
        "torch",
        "onnx",
        "onnxruntime",
    ]
