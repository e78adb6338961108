"""Install hints name a command that works for the btxrd that is running."""

from __future__ import annotations

from pathlib import Path

import pytest

from btxrd.runtime.install import hint_for, install_hint

ROOT = Path(__file__).resolve().parents[2]


def test_from_an_index_the_hint_names_the_distribution() -> None:
    assert hint_for(None, "parquet") == "pip install 'btxrd[parquet]'"


def test_from_a_source_folder_the_hint_names_the_folder(tmp_path: Path) -> None:
    origin = {"url": tmp_path.as_uri(), "dir_info": {}}
    assert hint_for(origin, "ray") == f"pip install '{tmp_path}[ray]'"


def test_from_an_editable_folder_the_hint_stays_editable(tmp_path: Path) -> None:
    origin = {"url": tmp_path.as_uri(), "dir_info": {"editable": True}}
    assert hint_for(origin, "serve") == f"pip install -e '{tmp_path}[serve]'"


def test_from_a_wheel_file_the_hint_names_the_file(tmp_path: Path) -> None:
    wheel = tmp_path / "btxrd-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    origin = {"url": wheel.as_uri(), "archive_info": {}}
    assert hint_for(origin, "dicom") == f"pip install '{wheel}[dicom]'"


def test_a_source_that_is_gone_gives_both_forms(tmp_path: Path) -> None:
    origin = {"url": (tmp_path / "gone").as_uri(), "dir_info": {}}
    hint = hint_for(origin, "timm")
    assert f"pip install '{tmp_path / 'gone'}[timm]'" in hint
    assert hint.endswith("or pip install 'btxrd[timm]'")


def test_from_a_repository_the_hint_is_a_direct_reference() -> None:
    origin = {"url": "https://example.org/btxrd.git", "vcs_info": {"vcs": "git"}}
    assert hint_for(origin, "ray") == (
        "pip install 'btxrd[ray] @ git+https://example.org/btxrd.git'"
    )


def test_a_space_in_the_folder_is_quoted_for_the_shell(tmp_path: Path) -> None:
    folder = tmp_path / "my btxrd"
    folder.mkdir()
    assert hint_for({"url": folder.as_uri(), "dir_info": {}}, "ray") == (
        f"pip install '{folder}[ray]'"
    )


def test_this_environment_gets_the_checkout_it_was_installed_from() -> None:
    # Both test environments install this checkout from its folder (make test: editable).
    hint = install_hint("parquet")
    if hint == "pip install 'btxrd[parquet]'":
        pytest.skip("btxrd here was installed from an index")
    assert f"{ROOT}[parquet]'" in hint
