"""Where the shipped demo model and sample radiographs live."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_MODEL = "models/btxrd-demo.onnx"
SAMPLES = "models/samples"
# In a source checkout (or editable install) the package sits one level below the repo root.
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def shipped(relative: str) -> Path:
    """``relative`` from the working directory if it exists there, else from the source tree."""
    here = Path(relative)
    if here.exists() or here.is_absolute():
        return here
    return _SOURCE_ROOT / relative


def default_model_path(config_value: str | None = None) -> Path:
    """Precedence below the command line: BTXRD_MODEL, then the config, then the demo model."""
    return shipped(os.environ.get("BTXRD_MODEL") or config_value or DEMO_MODEL)


def default_samples_dir() -> Path:
    return shipped(SAMPLES)
