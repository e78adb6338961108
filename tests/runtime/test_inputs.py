"""Collecting input files from a folder, and naming one output per input."""

from __future__ import annotations

from pathlib import Path

import pytest

from btxrd.runtime.decode.inputs import collect_folder, output_names


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _relative(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "scans"
    _touch(
        root,
        "b.png",
        "a.JPG",
        "c.jpeg",
        "d.tiff",
        "e.bmp",
        "f.dcm",
        "notes.txt",
        "image.png.bak",
        ".hidden.png",
        "sub/z.png",
        "sub/deeper/y.tif",
        ".git/objects.png",
        "sub/.thumbs/t.png",
    )
    return root


def test_top_level_only_sorted_without_hidden_or_other_files(tree):
    assert _relative(collect_folder(tree, recursive=False), tree) == [
        "a.JPG",
        "b.png",
        "c.jpeg",
        "d.tiff",
        "e.bmp",
        "f.dcm",
    ]


def test_recursive_descends_but_skips_hidden_folders(tree):
    assert _relative(collect_folder(tree, recursive=True), tree) == [
        "a.JPG",
        "b.png",
        "c.jpeg",
        "d.tiff",
        "e.bmp",
        "f.dcm",
        "sub/deeper/y.tif",
        "sub/z.png",
    ]


def test_excluded_folders_are_not_collected(tree):
    found = collect_folder(tree, recursive=True, exclude=(tree / "sub" / "deeper",))
    assert "sub/deeper/y.tif" not in _relative(found, tree)
    assert "sub/z.png" in _relative(found, tree)


def test_symlink_loops_terminate_and_list_each_real_folder_once(tree):
    (tree / "sub" / "back").symlink_to(tree, target_is_directory=True)
    (tree / "sub" / "deeper" / "self").symlink_to(tree / "sub" / "deeper", target_is_directory=True)
    found = _relative(collect_folder(tree, recursive=True), tree)
    assert found.count("sub/z.png") == 1
    assert found.count("sub/deeper/y.tif") == 1
    assert len(found) == 8


def test_symlinked_folder_is_followed_once(tmp_path, tree):
    elsewhere = tmp_path / "elsewhere"
    _touch(elsewhere, "w.png")
    (tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert "linked/w.png" in _relative(collect_folder(tree, recursive=True), tree)


def test_output_names_are_stems_with_the_suffix():
    paths = [Path("/data/a.png"), Path("/data/b.jpeg")]
    assert output_names(paths, None, "_cam.png") == ["a_cam.png", "b_cam.png"]


def test_output_names_use_the_relative_path_under_the_folder():
    base = Path("/data")
    paths = [base / "left" / "knee.png", base / "right" / "knee.png", base / "hip.png"]
    assert output_names(paths, base, "_cam.png") == [
        "left__knee_cam.png",
        "right__knee_cam.png",
        "hip_cam.png",
    ]


def test_output_names_never_collide():
    base = Path("/data")
    paths = [
        Path("/x/scan.png"),
        Path("/y/scan.png"),
        Path("/z/scan.jpeg"),
        base / "a__b.png",
        base / "a" / "b.png",
    ]
    names = output_names(paths[:3], None, "_cam.png") + output_names(paths[3:], base, "_cam.png")
    assert len(set(names[:3])) == 3
    assert len(set(names[3:])) == 2
    assert all(name.endswith("_cam.png") for name in names)
