"""``docs/own-model.md`` runs as written: its Python block and every command of its shell blocks,
in order, in a folder holding an ImageFolder ``my-data/``, with the installed commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-model.md"
PER_CLASS = 200  # 30 of each class in val: the default bar of a trustworthy fit

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def _blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _commands() -> list[str]:
    return [line for block in _blocks("sh") for line in block.splitlines() if line.strip()]


def test_the_page_has_the_four_steps() -> None:
    (python,) = _blocks("python")
    assert "save_checkpoint(" in python
    commands = [c.split()[0] for c in _commands()]
    assert commands == ["btxrd-export", "btxrd-run", "btxrd-run", "btxrd-serve"]
    link = "docs/own-model.md"
    assert link in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, make_phantom) -> Path:
    folder = tmp_path_factory.mktemp("own-model")
    for index, name in enumerate(("Normal", "Benign", "Malignant")):
        (folder / "my-data" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            array = make_phantom(height=72, width=56 + 8 * index, seed=1000 * index + i)
            Image.fromarray(array).save(folder / "my-data" / name / f"{i:04d}.png")
    # btxrd-serve's port from the config (0: a free one), so the command runs as written.
    (folder / "config.yaml").write_text("serve:\n  port: 0\n", encoding="utf-8")
    return folder


def _environment(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BTXRD_CONFIG"] = str(workspace / "config.yaml")
    return env


def test_every_step_runs_as_written(workspace: Path) -> None:
    env = _environment(workspace)
    (python,) = _blocks("python")
    saved = subprocess.run(
        [sys.executable, "-c", python], cwd=workspace, env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    assert (workspace / "my-model.pt").is_file()

    outputs = {}
    for command in _commands():
        if command.startswith("btxrd-serve"):
            _check_server(command, workspace, env)
            continue
        done = subprocess.run(
            ["bash", "-c", command], cwd=workspace, env=env, capture_output=True, text=True
        )
        # btxrd-run --labels exits 1 when the gate refused some of the images.
        assert done.returncode in ((0, 1) if "--labels" in command else (0,)), done.stderr
        outputs[command] = done

    exported = outputs["btxrd-export my-model.pt -o my-model.onnx --calibration-data my-data/"]
    assert "wrote my-model.onnx" in exported.stdout
    split = json.loads((workspace / "my-model.split.json").read_text())
    assert sum(name.startswith("Benign/") for name in split["val"]) == 30
    checked = next(done for command, done in outputs.items() if "--labels" in command)
    accuracy = [line for line in checked.stdout.splitlines() if line.startswith("accuracy")]
    assert accuracy and accuracy[0] in exported.stderr  # the figures export printed
    info = outputs["btxrd-run --model my-model.onnx --info"].stdout
    assert "my bone classifier, version 1.0, architecture resnet18" in info
    assert "calibration    temperature" in info and "ood gate       mahalanobis_multilayer" in info


def _check_server(command: str, workspace: Path, env: dict[str, str]) -> None:
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=workspace,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        assert server.stderr is not None
        for line in server.stderr:  # each line as the server prints it; ends if it exits
            found = re.search(r"serving (http://\S+)", line)
            if found:
                url = found.group(1)
                break
            assert time.monotonic() < deadline, "btxrd-serve did not start"
        assert url, f"btxrd-serve ended without serving (exit {server.poll()})"
        with urllib.request.urlopen(url + "api/model", timeout=30) as answer:
            model = json.load(answer)
        assert model["model"] == {"name": "my bone classifier", "version": "1.0"}
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
