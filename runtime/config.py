"""YAML configuration: built-in defaults, overridden by a file, overridden by flags.

``configs/default.yaml`` lists every tunable with its default; a test keeps it equal to
``DEFAULTS`` here. Unknown keys and wrong types are refused with the key's full path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from btxrd.runtime.errors import ConfigError

# `None` means "no fixed value" (e.g. threads: every core); such keys accept int or null.
DEFAULTS: dict[str, Any] = {
    "paths": {
        "model": "models/btxrd-demo.onnx",
        "checkpoint": "models/btxrd-demo.pt",
        "samples": "models/samples",
        "data": "data/synthetic",
    },
    "preprocessing": {
        # Export writes the contract into the ONNX file; the runtime never reads these.
        "image_size": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    "inference": {
        "threads": None,
        "batch_size": 8,
        "max_pixels": 100_000_000,
        "min_side": 16,
        "max_aspect": 20.0,
    },
    "cam": {
        "out": "results/cam",
        "alpha": 0.45,
    },
    "gradcam": {
        "method": "gradcam",
        "out": "results/explain",
        "k": 3,
        "iou_threshold": 0.5,
        "alpha": 0.45,
    },
}
_NULLABLE_INT = {("inference", "threads")}
# Inclusive ranges for numbers that have one.
_RANGES: dict[tuple[str, ...], tuple[float, float]] = {
    ("inference", "batch_size"): (1, 1024),
    ("inference", "max_pixels"): (1, 10**10),
    ("inference", "min_side"): (1, 10**5),
    ("inference", "max_aspect"): (1, 10**4),
    ("cam", "alpha"): (0, 1),
    ("gradcam", "alpha"): (0, 1),
    ("gradcam", "k"): (1, 20),
    ("gradcam", "iou_threshold"): (0, 1),
    ("preprocessing", "image_size"): (8, 4096),
}


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Defaults merged with ``path`` (or ``$BTXRD_CONFIG``), validated."""
    config = copy.deepcopy(DEFAULTS)
    source = path or os.environ.get("BTXRD_CONFIG")
    if not source:
        return config
    source = Path(source)
    try:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{source}: invalid YAML{line}; fix the syntax") from None
    if loaded is None:
        return config
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    _merge(config, loaded, DEFAULTS, (), source)
    return config


def _merge(target: dict, loaded: Mapping, defaults: Mapping, trail: tuple, source: Path) -> None:
    for key, value in loaded.items():
        path = (*trail, key)
        dotted = ".".join(map(str, path))
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {known})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping")
            _merge(target[key], value, default, path, source)
            continue
        target[key] = _checked(value, default, path, dotted, source)


def _checked(value: Any, default: Any, path: tuple, dotted: str, source: Path) -> Any:
    if path in _NULLABLE_INT:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise ConfigError(f"{source}: '{dotted}' must be a positive integer or null")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{source}: '{dotted}' must be of type {type(default).__name__}, "
            f"got {type(value).__name__} ({value!r})"
        )
    if path in _RANGES:
        low, high = _RANGES[path]
        if not low <= value <= high:
            raise ConfigError(
                f"{source}: '{dotted}' must be between {low:g} and {high:g}, got {value!r}"
            )
    return value
