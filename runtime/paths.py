"""Where the shipped demo model and sample radiographs live.

They are package data of ``btxrd.models`` (the repository's ``models/`` folder), so an installed
``btxrd-run`` finds the demo model from any working directory; a path that exists relative to the
working directory wins, so a checkout's own ``models/`` is used when run from its root.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from btxrd.runtime.settings import PathSettings

SAMPLES = "models/samples"
_PACKAGED_FOLDER = "models"


def shipped(relative: str) -> Path:
    """``relative`` from the working directory if it exists there, else from the package data
    (``models/...`` only); otherwise ``relative`` as given, for the caller's "not found"."""
    here = Path(relative)
    if here.exists() or here.is_absolute():
        return here
    if here.parts[:1] == (_PACKAGED_FOLDER,):
        packaged = _packaged_models().joinpath(*here.parts[1:])
        if packaged.exists():
            return packaged
    return here


def default_model_path(config_value: str | None = None) -> Path:
    """Precedence below the command line: BTXRD_MODEL, then the config, then the demo model."""
    return shipped(os.environ.get("BTXRD_MODEL") or config_value or PathSettings().model)


def default_samples_dir() -> Path:
    return shipped(SAMPLES)


def _packaged_models() -> Path:
    spec = importlib.util.find_spec("btxrd.models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else Path(_PACKAGED_FOLDER)
