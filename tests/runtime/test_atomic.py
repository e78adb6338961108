"""The one write helper: all or nothing, old file intact on failure, no temp files left."""

from __future__ import annotations

import os
import stat

import pytest

from btxrd.runtime.output.atomic import atomic_open, write_bytes, write_text


def test_write_text_creates_the_file(tmp_path):
    path = tmp_path / "out.json"
    write_text(path, '{"ok": true}\n')
    assert path.read_text(encoding="utf-8") == '{"ok": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_bytes_replaces_the_old_content(tmp_path):
    path = tmp_path / "overlay.png"
    path.write_bytes(b"old")
    write_bytes(path, b"\x89PNG new")
    assert path.read_bytes() == b"\x89PNG new"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_inside_the_block_keeps_the_old_file_and_no_temp_file(tmp_path, error):
    path = tmp_path / "results.csv"
    path.write_text("old,results\n", encoding="utf-8")
    with pytest.raises(type(error)), atomic_open(path, "w") as handle:
        handle.write("new,half-written")
        raise error
    assert path.read_text(encoding="utf-8") == "old,results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_failure_on_a_new_file_leaves_nothing(tmp_path):
    path = tmp_path / "new.json"
    with pytest.raises(ValueError), atomic_open(path) as handle:
        handle.write("{")
        raise ValueError("serialisation failed")
    assert list(tmp_path.iterdir()) == []


def test_unicode_text_is_utf8(tmp_path):
    path = tmp_path / "names.txt"
    write_text(path, "Ösophagus – Schädel\n")
    assert path.read_bytes() == "Ösophagus – Schädel\n".encode()


def test_written_files_honour_the_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "shared.json"
        write_text(path, "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_missing_folder_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "no" / "such" / "dir.json", "{}")
    assert list(tmp_path.iterdir()) == []
