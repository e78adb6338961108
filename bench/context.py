"""What every benchmark section needs: paths, counts, inputs, the model, the process environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from inputs import Inputs
from model_files import ModelFiles

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Counts:
    """How much work each section does: ``FULL`` for ``make bench``, ``QUICK`` for a smoke run."""

    cold_reps: int = 5
    folder_images: int = 200
    folder_reps: int = 3
    inprocess_images: int = 64
    inprocess_reps: int = 3
    draft_images: int = 200
    matmul_n: int = 4096
    matmul_reps: int = 3
    model_reps: int = 7
    session_load_reps: int = 4
    int8_calibration: int = 100
    int8_held_out: int = 450
    int8_reps: int = 5
    cam_images: int = 64
    cam_reps: int = 5
    gradcam_images: int = 8
    gradcam_reps: int = 5
    memory_counts: tuple[int, int] = (200, 2000)
    memory_distinct: int = 200
    warmup: int = 1


FULL = Counts()
QUICK = Counts(
    cold_reps=2,
    folder_images=12,
    folder_reps=1,
    inprocess_images=8,
    inprocess_reps=1,
    draft_images=8,
    matmul_n=1024,
    matmul_reps=2,
    model_reps=2,
    session_load_reps=1,
    int8_calibration=8,
    int8_held_out=16,
    int8_reps=2,
    cam_images=8,
    cam_reps=2,
    gradcam_images=2,
    gradcam_reps=1,
    memory_counts=(10, 40),
    memory_distinct=10,
    warmup=0,
)


@dataclass(frozen=True)
class Context:
    repo: Path
    cache: Path
    counts: Counts
    quick: bool
    venv_bin: Path  # the full environment (torch, onnx, grad-cam): reference side and helpers
    run_venv: Path  # where btxrd-run comes from: .venv-run when built, else .venv
    inputs: Inputs
    model: ModelFiles

    @property
    def btxrd_run(self) -> str:
        return str(self.run_venv / "bin" / "btxrd-run")

    @property
    def python(self) -> str:
        return str(self.venv_bin / "python")

    @property
    def work(self) -> Path:
        folder = self.cache / "work"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def env(self) -> dict[str, str]:
        """The environment for child processes: no model, config or thread overrides."""
        drop = ("BTXRD_MODEL", "BTXRD_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        return {k: v for k, v in os.environ.items() if k not in drop}
