"""Fixtures for the explainer: a small synthetic BTXRD folder, a tiny checkpoint whose
predictions spread over the classes, a tiny CNN, LabelMe files, and one report run shared by the
CLI and rendering tests.

Everything torch-built imports torch behind ``pytest.importorskip``, so the mask, score and
selection tests still run in an environment without the extras.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

CLASSES = ("Normal", "Benign", "Malignant")
TINY_SIZE = 64
SYNTH_N = 24


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``btxrd-synth --n 24 --max-size 600``: images, Annotations/, dataset.xlsx."""
    pytest.importorskip("torch")  # the generator ships with the [export] extras
    from btxrd.export.synthetic.cli import main as synth

    out = tmp_path_factory.mktemp("synth") / "BTXRD"
    result = CliRunner().invoke(
        synth, ["--out", str(out), "--n", str(SYNTH_N), "--seed", "0", "--max-size", "600"]
    )
    assert result.exit_code == 0, result.output
    return out


def tiny_cnn(classes: int = 3, seed: int = 0):
    """conv-bn-relu x2 (8 x 8 feature map at 32 px) -> average pool -> linear, eval mode.

    Returns (model, target layer)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(seed)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
    )
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))
    _vary(model)
    return model.eval(), features


@pytest.fixture(scope="session")
def make_cnn():
    """Factory fixture: ``make_cnn(classes=3, seed=0)`` -> (model, target layer)."""
    return tiny_cnn


def _vary(model) -> None:
    """Random networks give near-uniform outputs: random BatchNorm statistics make every image
    score differently."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


@pytest.fixture(scope="session")
def tiny_resnet():
    """A randomly initialised torchvision resnet18 (3 classes) with varied outputs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from btxrd.export.archs import get_arch

    torch.manual_seed(0)
    arch = get_arch("resnet18")
    model = arch.build(len(CLASSES))
    _vary(model)
    with torch.no_grad():
        model.fc.weight.mul_(20.0)
    return model.eval(), arch.locate(model, (TINY_SIZE, TINY_SIZE))


@pytest.fixture(scope="session")
def tiny_checkpoint(synth_data: Path, tiny_resnet, tmp_path_factory) -> Path:
    """``tiny_resnet`` at 64 px, its head's bias set so predictions on ``synth_data`` spread over
    all classes (so there are TPs, FPs and FNs to show), saved as a btxrd checkpoint."""
    torch = pytest.importorskip("torch")
    from btxrd.explain.model import load_input
    from btxrd.export.checkpoint import save_checkpoint
    from btxrd.export.data.dataset import load_dataset
    from btxrd.runtime.model.contract import Preprocessing

    model = copy.deepcopy(tiny_resnet[0])
    prep = Preprocessing(image_size=(TINY_SIZE, TINY_SIZE))
    inputs = np.stack([load_input(s.image_path, prep)[1] for s in load_dataset(synth_data)])
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs))
        model.fc.bias.sub_(logits.mean(dim=0))
    path = tmp_path_factory.mktemp("tiny-ckpt") / "tiny.pt"
    save_checkpoint(path, model, arch="resnet18", class_names=CLASSES, image_size=TINY_SIZE)
    return path


@dataclass(frozen=True)
class ReportRun:
    out: Path
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def report_run(synth_data: Path, tiny_checkpoint: Path, tmp_path_factory) -> ReportRun:
    """``btxrd-explain report`` once over the synthetic folder."""
    from btxrd.explain.cli import main

    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(
        main,
        [
            "report",
            *("--data", str(synth_data), "--checkpoint", str(tiny_checkpoint)),
            *("--out", str(out), "--k", "3", "--panels", "2"),
        ],
    )
    return ReportRun(out, result.exit_code, result.stdout, result.stderr)
