"""What a plain ``pip install`` gets: the wheel built from this tree holds every module and data
file of the three packages and every model file the commands open at run time.

``.ci/test-wheel`` goes further on every submission: it installs that wheel, non-editable, into a
clean environment and runs each command from another folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("runtime", "export", "explain")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # Built from a copy of the source files: setuptools leaves build/ behind, and a stale
    # build/lib there would put deleted modules into later wheels.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # Isolated, as pip builds for a user: the environment's own setuptools may be too old.
    build = ("wheel", "-q", "--no-deps", "-w", str(out), str(source))
    subprocess.run([sys.executable, "-m", "pip", *build], check=True, capture_output=True)
    (wheel,) = out.glob("btxrd-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def _tree_files(folder: str) -> list[str]:
    return [
        f"btxrd/{path.relative_to(ROOT).as_posix()}"
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("folder", CODE_FOLDERS)
def test_wheel_holds_every_file_of_the_package(wheel_names: set[str], folder: str) -> None:
    files = _tree_files(folder)
    assert any(name.endswith("/__init__.py") for name in files)
    missing = [name for name in files if name not in wheel_names]
    assert not missing, f"the wheel lacks {missing}"


@pytest.mark.slow
def test_wheel_holds_what_the_commands_open(wheel_names: set[str]) -> None:
    # btxrd-run's default model, btxrd-explain's default checkpoint, the samples (btxrd-export's
    # parity images, the page's examples), the model card, the results schema and the page.
    wanted = [
        "btxrd/models/btxrd-demo.onnx",
        "btxrd/models/btxrd-demo.pt",
        "btxrd/models/README.md",
        "btxrd/runtime/py.typed",
        "btxrd/runtime/schemas/results.schema.json",
        "btxrd/runtime/serve/static/index.html",
        *_tree_files("models/samples"),
    ]
    missing = [name for name in wanted if name not in wheel_names]
    assert not missing, f"the wheel lacks {missing}"


@pytest.mark.slow
def test_wheel_holds_nothing_from_outside_the_packages(wheel_names: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names}
    assert all(top == "btxrd" or top.endswith(".dist-info") for top in tops), tops
    assert not [name for name in wheel_names if "/tests/" in name or "/bench/" in name]
