"""The runtime stays torch-free: importing any of its modules pulls in none of the heavy extras.

Every module is found by walking the package (no hand-kept list), each in a fresh interpreter of
whichever environment runs the tests: CI runs this file in the full environment and in the
runtime-only one (``make test-runtime``), where a heavy import would fail outright.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import btxrd.runtime

HEAVY = ("torch", "torchvision", "onnx", "cv2", "pytorch_grad_cam", "openpyxl")
RUNTIME_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(btxrd.runtime.__path__, btxrd.runtime.__name__ + ".")
)

_PROBE = """
import importlib, json, sys
importlib.import_module({module!r})
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_the_walk_finds_the_runtime_modules():
    # Guards the walk itself: an empty or partial list would make the test below pass vacuously.
    assert {
        "btxrd.runtime.cli.run",
        "btxrd.runtime.model.classifier",
        "btxrd.runtime.model.session",
    } <= set(RUNTIME_MODULES)


# btxrd-serve's web layer needs the [serve] extra, the DICOM node's modules the [dicom-node]
# extra; their packages and commands import without them.
WEB_MODULES = ("btxrd.runtime.serve.app",)
NODE_MODULES = ("btxrd.runtime.node.objects", "btxrd.runtime.node.outbox", "btxrd.runtime.node.scp")


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_runtime_module_imports_no_heavy_extras(module):
    if module in WEB_MODULES:
        pytest.importorskip("starlette")
    if module in NODE_MODULES:
        pytest.importorskip("pynetdicom")
        pytest.importorskip("highdicom")
    code = _PROBE.format(module=module, heavy=HEAVY)
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def _heavy_after(body: str) -> list[str]:
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from btxrd.runtime.cli.run import main\n"
        f"{body}\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def test_cli_help_imports_no_heavy_extras():
    assert _heavy_after("CliRunner().invoke(main, ['--help'])") == []


def test_classifying_with_cams_imports_no_heavy_extras(tiny_onnx, phantom_images, tmp_path):
    args = [
        "--model",
        str(tiny_onnx),
        "--json",
        "--cam",
        "--cam-dir",
        str(tmp_path / "cams"),
        *map(str, phantom_images.values()),
    ]
    body = f"result = CliRunner().invoke(main, {args!r})\nassert result.exit_code == 0, result"
    assert _heavy_after(body) == []
