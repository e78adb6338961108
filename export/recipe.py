"""Training recipes (``configs/demo-*.yaml``): read, merge onto their ``base:``, validate.

``RECIPE`` below is the one place that says which keys a recipe has, of what type and, where
training cannot run outside them, within which bounds, as nanoGPT's config keeps its defaults in
one place: a typo or a wrong type is a ``ConfigError`` naming the file and the key
(``training.lr``), never a value that training silently ignores or trips over later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from btxrd.runtime.errors import ConfigError, ModelError


@dataclass(frozen=True)
class Key:
    """One recipe value: what it must be, and whether a recipe may leave it out (training then
    reads ``None``: no initial checkpoint, no time cap)."""

    kind: str  # "int", "number" (int or float), "str", "list" (of numbers), "section"
    optional: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    length: int = 0  # for lists
    keys: Mapping[str, Key] | None = None  # for sections
    # Bounds (of each item, for lists) where training could not run outside them.
    low: float | None = None
    high: float | None = None
    total: float | None = None  # a list's items must add up to this


def _section(optional: bool = False, **keys: Key) -> Key:
    return Key("section", optional=optional, keys=keys)


_INT, _NUMBER, _STR = Key("int"), Key("number"), Key("str")

# Every key `btxrd.export.train.train` reads, and `data.generator`, which records the
# `btxrd-synth` options that made `data.root` (see configs/demo-train.yaml).
RECIPE = _section(
    data=_section(
        root=_STR,
        generator=_section(
            optional=True,
            n=Key("int", optional=True),
            seed=Key("int", optional=True),
            min_size=Key("int", optional=True),
            max_size=Key("int", optional=True),
            proportions=Key("list", optional=True, length=3),
        ),
        split_seed=_INT,
        split_fractions=Key("list", length=3, low=0, total=1),
    ),
    model=_section(
        arch=_STR,  # and one that btxrd.export.archs knows
        image_size=Key("int", low=8, high=4096),  # the model contract's range
        init_checkpoint=Key("str", optional=True, nullable=True),  # fine-tune from it
    ),
    training=_section(
        seed=_INT,
        epochs=Key("int", low=1),
        batch_size=Key("int", low=1),
        lr=_NUMBER,
        weight_decay=_NUMBER,
        warmup_epochs=_NUMBER,
        label_smoothing=_NUMBER,
        class_weights=Key("str", nullable=True, choices=("sqrt_inverse", "none")),
        dropout=_NUMBER,
        stochastic_depth=_NUMBER,
        lesion_loss=_NUMBER,
        lesion_pos_weight=_NUMBER,
        clip_grad_norm=_NUMBER,
        ema_decay=_NUMBER,
        threads=Key("int", low=1),
        max_minutes=Key("number", optional=True, nullable=True),
    ),
    augment=_section(
        hflip=Key("number", low=0, high=1),  # probabilities
        vflip=Key("number", low=0, high=1),
        degrees=_NUMBER,
        scale=Key("list", length=2),
        translate=_NUMBER,
        brightness=_NUMBER,
        contrast=_NUMBER,
    ),
    output=_section(checkpoint=_STR, split=_STR, metrics=_STR),
)


@dataclass(frozen=True)
class _Layer:
    path: Path
    raw: dict[str, Any]  # without its `base:`
    text: str


def load_recipe(path: str | Path) -> tuple[dict[str, Any], str]:
    """A validated recipe and its text. A recipe with ``base: FILE`` holds only what differs from
    that file (a path relative to the working directory, as every path in a recipe is). The
    merged recipe is validated; an error names the key and the file that set it."""
    layers = _read_layers(Path(path), named_by=None, seen=())
    recipe: dict[str, Any] = {}
    for layer in reversed(layers):
        recipe = _merged(recipe, layer.raw)
    _validate(recipe, RECIPE, (), layers)
    _check_arch(recipe, layers)
    return recipe, _recorded_text(layers)


def _read_layers(path: Path, named_by: Path | None, seen: tuple[Path, ...]) -> list[_Layer]:
    """The recipe and the chain of its bases, most specific first."""
    label = f"{path} (base of {named_by})" if named_by else str(path)
    if path.resolve() in seen:
        raise ConfigError(f"{label}: recipes name each other as base: in a loop")
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        fix = f"fix base: in {named_by}" if named_by else "pass --config FILE"
        raise ConfigError(f"{label}: recipe not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read the recipe ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: a recipe is a YAML mapping (data:, model:, training:, ...)")
    base = raw.pop("base", None)
    layer = _Layer(path, raw, text)
    if base is None:
        return [layer]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected the path of another recipe, got {_shown(base)}")
    return [layer, *_read_layers(Path(base), path, (*seen, path.resolve()))]


def _recorded_text(layers: list[_Layer]) -> str:
    """What the checkpoint records: the base's text first, then each file built on it."""
    first = layers[0]
    if len(layers) == 1:
        return first.text
    return f"# base: {layers[1].path}\n{_recorded_text(layers[1:])}\n# {first.path}\n{first.text}"


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both_dicts else value
    return out


def _validate(value: Any, spec: Key, where: tuple[str, ...], layers: list[_Layer]) -> None:
    def fault(message: str, at: tuple[str, ...] = where) -> ConfigError:
        return ConfigError(f"{_origin(at, layers)}: {'.'.join(at) or 'recipe'}: {message}")

    if value is None and spec.nullable:
        return
    if spec.kind == "section":
        keys = spec.keys or {}
        if not isinstance(value, dict):
            raise fault(f"expected a section of keys ({', '.join(keys)}), got {_shown(value)}")
        for key in value:
            if key not in keys:
                raise fault(f"unknown key; known here: {', '.join(keys)}", (*where, str(key)))
        for key, child in keys.items():
            if key in value:
                _validate(value[key], child, (*where, key), layers)
            elif not child.optional:
                raise fault("missing; set it here or in a base: recipe", (*where, key))
        return
    if spec.kind == "list":
        if not (
            isinstance(value, list)
            and len(value) == spec.length
            and all(_is_number(v) for v in value)
        ):
            raise fault(f"expected a list of {spec.length} numbers, got {_shown(value)}")
        for item in value:
            _check_bounds(item, spec, fault)
        if spec.total is not None and abs(sum(value) - spec.total) > 1e-6:
            raise fault(f"must add up to {spec.total:g}, got {_shown(value)}")
        return
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": _is_number,
        "str": lambda v: isinstance(v, str),
    }[spec.kind](value)
    if not ok:
        expected = {"int": "a whole number", "number": "a number", "str": "text"}[spec.kind]
        raise fault(
            f"expected {expected}{' or null' if spec.nullable else ''}, got {_shown(value)}"
        )
    if spec.choices and value not in spec.choices:
        raise fault(f"expected one of {', '.join(spec.choices)}, got {_shown(value)}")
    if spec.kind != "str":
        _check_bounds(value, spec, fault)


def _check_bounds(value: float, spec: Key, fault: Callable[[str], ConfigError]) -> None:
    if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
        low = "" if spec.low is None else f"{spec.low:g}"
        high = "" if spec.high is None else f"{spec.high:g}"
        bounds = (
            f"{low} to {high}" if low and high else f"at least {low}" if low else f"at most {high}"
        )
        raise fault(f"must be {bounds}, got {value!r}")


def _check_arch(recipe: dict[str, Any], layers: list[_Layer]) -> None:
    from btxrd.export.archs import get_arch  # torch: only once a recipe is otherwise valid

    try:
        get_arch(recipe["model"]["arch"])
    except ModelError as exc:
        where = ("model", "arch")
        raise ConfigError(f"{_origin(where, layers)}: model.arch: {exc}") from None


def _origin(where: tuple[str, ...], layers: list[_Layer]) -> Path:
    """The most specific file that sets ``where``, or else its nearest enclosing section."""
    for depth in range(len(where), 0, -1):
        for layer in layers:
            if _has(layer.raw, where[:depth]):
                return layer.path
    return layers[0].path


def _has(raw: dict[str, Any], where: tuple[str, ...]) -> bool:
    node: Any = raw
    for key in where:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return (text if len(text) <= 60 else text[:60] + "...") + f" ({type(value).__name__})"
