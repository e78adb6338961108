"""Folders users did not curate, through ``btxrd-run --dir``: nothing to classify says so,
clutter is skipped, walks terminate, outputs never overwrite each other nor become inputs, and an
unwritable output stops the run before any work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from reliability_support import assert_one_clear_line, records_of, run_cli, run_process


@pytest.fixture
def tree(tmp_path, good_images) -> Path:
    """scans/a.jpeg, scans/.hidden.png, scans/.DS_Store, scans/notes.txt, scans/knee/a.png,
    scans/hip/a.png (same stem twice), scans/loop -> scans."""
    root = tmp_path / "scans"
    (root / "knee").mkdir(parents=True)
    (root / "hip").mkdir()
    shutil.copy(good_images[0], root / "a.jpeg")
    shutil.copy(good_images[1], root / ".hidden.png")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (root / "notes.txt").write_text("not an image\n", encoding="utf-8")
    shutil.copy(good_images[1], root / "knee" / "a.png")
    shutil.copy(good_images[0], root / "hip" / "a.png")
    (root / "loop").symlink_to(root, target_is_directory=True)
    return root


@pytest.mark.parametrize(
    "contents", [[], [".DS_Store", "notes.txt", ".hidden.png"]], ids=["empty", "no-image"]
)
def test_folder_without_images_exits_1_and_says_so(tiny_onnx, tmp_path, contents):
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name in contents:
        (folder / name).write_bytes(b"x")
    result = run_cli("--model", tiny_onnx, "--dir", folder)
    assert result.exit_code == 1
    assert_one_clear_line(result.stderr, str(folder), "no image files found")


def test_clutter_is_skipped_and_only_top_level_without_recursive(tiny_onnx, tree):
    result = run_cli("--model", tiny_onnx, "--jsonl", "--dir", tree)
    assert result.exit_code == 0, result.stderr
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert paths == [str(tree / "a.jpeg")]


def test_recursive_walk_terminates_on_a_symlink_loop_and_keeps_same_stems_apart(
    tiny_onnx, tree, tmp_path
):
    cams = tmp_path / "cams"
    out = tmp_path / "results.jsonl"
    result = run_cli(
        *("--model", tiny_onnx, "--jsonl", "--output", out, "--recursive", "--dir", tree),
        *("--cam", "--cam-dir", cams),
    )
    assert result.exit_code == 0, result.stderr
    records = records_of(out)
    # Each real image once, however many ways the loop reaches it; hidden files never.
    assert sorted(Path(r["path"]).relative_to(tree).as_posix() for r in records) == [
        "a.jpeg",
        "hip/a.png",
        "knee/a.png",
    ]
    overlays = sorted(p.relative_to(cams).as_posix() for p in cams.rglob("*.png"))
    assert len(overlays) == 3 and len(set(overlays)) == 3, overlays


def test_outputs_inside_the_input_folder_are_not_read_back(tiny_onnx, tree):
    cams = tree / "overlays"
    out = tree / "results.jsonl"
    args = ("--model", tiny_onnx, "--jsonl", "--output", out, "--recursive", "--dir", tree)
    first = run_cli(*args, "--cam", "--cam-dir", cams)
    assert first.exit_code == 0, first.stderr
    second = run_cli(*args, "--cam", "--cam-dir", cams)
    assert second.exit_code == 0, second.stderr
    assert len(records_of(out)) == 3  # the overlays written by the first run are not inputs


@pytest.mark.parametrize("target", ["output", "cam-dir"])
def test_unwritable_output_exits_3_before_any_work(tiny_onnx, good_images, tmp_path, target):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n", encoding="utf-8")
    where = blocker / "sub" / ("results.json" if target == "output" else "cams")
    option = ["--json", "--output", where] if target == "output" else ["--cam", "--cam-dir", where]
    result = run_cli("--model", tiny_onnx, *option, *good_images)
    assert result.exit_code == 3
    assert_one_clear_line(result.stderr, str(where))
    assert result.stdout == ""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_read_only_output_folder_exits_3_before_any_work(tiny_onnx, good_images, tmp_path):
    """Mode bits hold for root inside a new user namespace (``unshare --user``)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    out = folder / "results.json"
    done = run_process(
        *("--model", tiny_onnx, "--json", "--output", out, *good_images),
        wrap=["unshare", "--user"],
    )
    assert done.returncode == 3, done.stderr
    assert_one_clear_line(done.stderr.decode(), str(out), "not writable")
    assert done.stdout == b"" and not out.exists()
    assert os.listdir(folder) == []
