"""``btxrd-explain --help`` stays instant: the CLI module imports neither torch nor
pytorch-grad-cam, and the CAM module imports pytorch-grad-cam (about 4 s) only to compute."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(n for n in {names!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [n for n in done.stdout.strip().split(",") if n]


def test_cli_module_imports_no_torch() -> None:
    loaded = _modules_after("import btxrd.explain.cli", ("torch", "pytorch_grad_cam", "cv2"))
    assert loaded == []


@pytest.mark.torch
def test_cam_module_defers_pytorch_grad_cam() -> None:
    pytest.importorskip("torch")
    loaded = _modules_after("import btxrd.explain.cam", ("pytorch_grad_cam", "cv2"))
    assert loaded == []
