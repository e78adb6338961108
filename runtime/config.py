"""YAML configuration: built-in defaults, overridden by a file, overridden by flags.

The tunables, their defaults and their ranges are defined once, in ``btxrd.runtime.settings``;
``configs/default.yaml`` writes them out and a test keeps the two equal. Unknown keys, wrong types
and values out of range are refused with the key's full path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from btxrd.runtime.errors import ConfigError
from btxrd.runtime.settings import defaults, field_of

DEFAULTS: dict[str, Any] = defaults()


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Defaults merged with ``path`` (or ``$BTXRD_CONFIG``), validated."""
    config = copy.deepcopy(DEFAULTS)
    source = path or os.environ.get("BTXRD_CONFIG")
    if not source:
        return config
    source = Path(source)
    import yaml  # here, not above: most runs have no config file, and it takes 10 ms to import

    try:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: the config is not UTF-8 text; save it as UTF-8") from None
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
    section, key = path
    metadata = field_of(section, key).metadata
    limits = metadata.get("limits")
    if metadata.get("nullable") and value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int) or (default is None and metadata.get("nullable")):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        wanted = "integer" if default is None else type(default).__name__
        nullable = " or null" if metadata.get("nullable") else ""
        raise ConfigError(
            f"{source}: '{dotted}' must be of type {wanted}{nullable}, "
            f"got {type(value).__name__} ({value!r})"
        )
    if limits is not None and not limits.contains(value):
        raise ConfigError(f"{source}: '{dotted}' must lie in {limits.describe()}, got {value!r}")
    return value
