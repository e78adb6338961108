"""The runtime stays torch-free: importing it pulls in none of the heavy extras."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "onnx", "cv2", "pytorch_grad_cam")

_PROBE = """
import json, sys
{imports}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import btxrd.runtime, btxrd.runtime.cli, btxrd.runtime.classifier",
        "from btxrd.runtime import imageio, preprocess, model, report, inputs, overlay, config, "
        "selftest, atomic, cliutil, contract, postprocess",
    ],
    ids=["entry-points", "every-module"],
)
def test_runtime_imports_no_heavy_extras(imports):
    code = _PROBE.format(imports=imports, heavy=HEAVY)
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def _heavy_after(body: str) -> list[str]:
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from btxrd.runtime.cli import main\n"
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
