"""The model under test: the shipped demo model when it exists, else a cached stand-in.

The stand-in is a randomly initialised torchvision EfficientNet-B0 (batch-norm statistics
re-estimated on a few synthetic radiographs so activations have realistic ranges), saved in the
checkpoint contract and exported with ``btxrd-export`` like any real model. Speed does not depend
on the weights; int8 agreement and draft-mode probability changes do, so those figures are
labelled as measured on a stand-in.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from btxrd.runtime.output.atomic import write_text

DEMO_ONNX = Path("models/btxrd-demo.onnx")
DEMO_CHECKPOINT = Path("models/btxrd-demo.pt")
_STANDIN_RECIPE = {"arch": "efficientnet_b0", "classes": 3, "bn_images": 32, "version": 1}


@dataclass(frozen=True)
class ModelFiles:
    onnx: Path
    checkpoint: Path
    standin: bool
    sha256: str
    note: str

    def to_json(self) -> dict[str, object]:
        return {
            "onnx": str(self.onnx),
            "checkpoint": str(self.checkpoint),
            "standin": self.standin,
            "sha256": self.sha256,
            "note": self.note,
        }


def find_or_make(
    repo: Path, cache: Path, venv_bin: Path, parity_images: Callable[[], Path]
) -> ModelFiles:
    onnx, checkpoint = repo / DEMO_ONNX, repo / DEMO_CHECKPOINT
    if onnx.is_file() and checkpoint.is_file():
        return ModelFiles(onnx, checkpoint, False, _sha256(onnx), "the shipped demo model")
    folder = cache / "standin"
    onnx, checkpoint, stamp = (folder / n for n in ("standin.onnx", "standin.pt", "recipe.json"))
    fresh = stamp.is_file() and json.loads(stamp.read_text()) == _STANDIN_RECIPE
    if not (fresh and onnx.is_file() and checkpoint.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        images = parity_images()
        print(f"bench: no demo model; exporting a stand-in to {onnx} (once)", file=sys.stderr)
        worker = Path(__file__).with_name("torch_worker.py")
        _run(
            [
                str(venv_bin / "python"),
                str(worker),
                "standin",
                "--out",
                str(checkpoint),
                "--images",
                str(images),
            ]
        )
        _run(
            [
                str(venv_bin / "btxrd-export"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(onnx),
                "--parity-images",
                str(images),
            ]
        )
        write_text(stamp, json.dumps(_STANDIN_RECIPE) + "\n")
    note = (
        "STAND-IN: randomly initialised efficientnet_b0 (no demo model found); speed figures "
        "hold, int8 agreement and draft-mode probability changes are not meaningful"
    )
    return ModelFiles(onnx, checkpoint, True, _sha256(onnx), note)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
