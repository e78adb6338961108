"""The checkpoint contract: a dict saved by ``torch.save`` with ``model_state_dict``,
``class_names``, ``config`` (``arch``, ``image_size``) and ``normalization`` {mean, std}.

The predecessor project's checkpoints load too: their ``config`` is a whole YAML tree
(``model.backbone``, ``data.image_size``) and their state dicts wrap a timm network as ``model.``.
Loading always uses ``weights_only=True``; nothing in a checkpoint can run code.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from btxrd.export.archs import DEMO_ARCHS, TIMM_PREFIX, Arch, get_arch, torchvision_names
from btxrd.runtime.errors import ModelError
from btxrd.runtime.model.contract import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

PREDECESSOR_PREFIX = "model."


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    arch: str  # as declared in the checkpoint; resolved against the weights by `build_model`
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    state_dict: Mapping[str, torch.Tensor]
    config: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # epoch, metrics, ... when present


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load safely (``weights_only=True``); refuse anything that would need pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{path}: checkpoint is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a torch checkpoint (torch.save writes zip archives)")
    _check_stored_sizes(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            cause = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise ModelError(f"{path}: not a readable torch checkpoint ({cause})") from None
        raise ModelError(
            f"{path}: refused: loading it would need pickled code or objects "
            f"({', '.join(unsafe) or 'unknown globals'}); re-save it as plain tensors, "
            "class names and config (see the README's checkpoint contract)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable torch checkpoint ({_first_line(exc)})") from None
    if not isinstance(raw, dict) or "model_state_dict" not in raw:
        raise ModelError(f"{path}: not a btxrd checkpoint: no 'model_state_dict' key")
    return _parse(raw, path, hashlib.sha256(data).hexdigest())


# torch.save stores tensors uncompressed; weights deflate by a few percent at most. The largest
# network btxrd exports is far below this; a zip that expands beyond it is refused unread.
MAX_CHECKPOINT_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 20


def _check_stored_sizes(path: Path) -> None:
    """Refuse a checkpoint whose zip entries would expand past ``MAX_CHECKPOINT_BYTES``, or
    compress like no weights do (a zip bomb), from the archive's directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable torch checkpoint ({exc})") from None
    total = sum(entry.file_size for entry in entries)
    if total > MAX_CHECKPOINT_BYTES:
        raise ModelError(
            f"{path}: its tensors would take {total / 1024**3:.1f} GiB, more than the "
            f"{MAX_CHECKPOINT_BYTES / 1024**3:.0f} GiB btxrd loads; refused before loading"
        )
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > 1024**2 and ratio > MAX_COMPRESSION_RATIO:
            raise ModelError(
                f"{path}: entry {entry.filename!r} expands {ratio:,.0f} times "
                f"({entry.file_size / 1024**2:,.0f} MiB); trained weights do not compress like "
                "that, so it is refused before loading (a zip bomb?)"
            )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    class_names: tuple[str, ...] | list[str],
    image_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    **extra: Any,
) -> None:
    """Write a checkpoint in the contract's layout (plain tensors and builtins only)."""
    from btxrd.runtime.output.atomic import atomic_open

    payload = {
        "model_state_dict": model.state_dict(),
        "class_names": list(class_names),
        "config": {"arch": arch, "image_size": image_size},
        "normalization": {"mean": list(mean), "std": list(std)},
        **extra,
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def build_model(checkpoint: Checkpoint, target_layer: str | None = None) -> tuple[nn.Module, Arch]:
    """The network with the checkpoint's weights, in eval mode, and its architecture with its
    parts located (``Arch.locate``; ``target_layer`` names the Grad-CAM layer).

    ``ModelError`` naming the checkpoint for an architecture btxrd does not support (unknown,
    not a plain timm name, timm not installed, no linear classifier) or weights that fit none
    of the networks the name may mean.
    """
    state = _strip_prefix(checkpoint.state_dict)
    try:
        candidates = _candidate_archs(checkpoint.arch, state)
    except ModelError as exc:
        raise ModelError(f"{checkpoint.path}: {exc}") from None
    model = arch = None
    misfit: ModelError | None = None
    for candidate in candidates:
        built = candidate.build(len(checkpoint.class_names))
        try:
            _load_state(built, state, checkpoint)
        except ModelError as exc:
            misfit = misfit or exc
            continue
        model, arch = built, candidate
        break
    if model is None or arch is None:
        assert misfit is not None
        raise misfit
    model.eval()
    try:
        arch = arch.locate(model, checkpoint.preprocessing.image_size, target_layer)
    except ModelError as exc:
        raise ModelError(f"{checkpoint.path}: architecture {arch.name!r}: {exc}") from None
    return model, arch


def _parse(raw: dict[str, Any], path: Path, sha256: str) -> Checkpoint:
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise ModelError(f"{path}: 'config' must be a dict")
    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    arch = config.get("arch") or model_cfg.get("backbone") or "efficientnet_b0"
    size = config.get("image_size") or data_cfg.get("image_size") or 224
    names = raw.get("class_names") or model_cfg.get("class_names")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ModelError(f"{path}: no 'class_names' list in the checkpoint")
    norm = raw.get("normalization") or {}
    if not isinstance(arch, str) or not isinstance(norm, dict):
        raise ModelError(f"{path}: 'config.arch' must be a name and 'normalization' a dict")
    try:
        if isinstance(size, (list, tuple)):
            image_size = (int(size[0]), int(size[1]))
        else:
            image_size = (int(size), int(size))
        prep = Preprocessing(
            image_size=image_size,
            mean=tuple(float(v) for v in norm.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in norm.get("std", IMAGENET_STD)),
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: unreadable image size or normalization ({exc})") from None
    try:
        prep.validate()
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    known = {"model_state_dict", "class_names", "config", "normalization"}
    return Checkpoint(
        path=path,
        sha256=sha256,
        arch=arch,
        class_names=tuple(names),
        preprocessing=prep,
        state_dict=raw["model_state_dict"],
        config=config,
        extra={k: v for k, v in raw.items() if k not in known and not k.endswith("state_dict")},
    )


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The predecessor wrapped its timm network as `self.model`, so every key starts with it.
    if state and all(k.startswith(PREDECESSOR_PREFIX) for k in state):
        return {k[len(PREDECESSOR_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def _candidate_archs(declared: str, state: Mapping[str, torch.Tensor]) -> list[Arch]:
    """The networks ``declared`` may mean, most likely first; the weights pick among them.

    A bare name torchvision knows may also be a timm network of the same name (the
    predecessor saved its timm backbones bare): torchvision's first unless the weights look
    like timm's. Any other bare name is the predecessor's timm backbone. ``get_arch`` checks
    each against what btxrd supports before timm sees it."""
    if declared.startswith(TIMM_PREFIX):
        return [get_arch(declared)]
    if declared in DEMO_ARCHS or declared in torchvision_names():
        torchvision_arch = get_arch(declared)
        try:
            timm_arch = get_arch(TIMM_PREFIX + declared)
        except ModelError:  # timm missing, or no timm model of that name
            return [torchvision_arch]
        if _looks_like_timm(state):
            return [timm_arch, torchvision_arch]
        return [torchvision_arch, timm_arch]
    return [get_arch(TIMM_PREFIX + declared)]


def _looks_like_timm(state: Mapping[str, torch.Tensor]) -> bool:
    return "conv_stem.weight" in state or (
        "fc.weight" in state and "conv1.weight" in state and "layer1.0.conv1.weight" not in state
    )


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], ckpt: Checkpoint) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys (e.g. {', '.join(keys[:3])})")
        for key in mismatched[:3]:
            parts.append(
                f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
            )
        raise ModelError(
            f"{ckpt.path}: weights do not fit {ckpt.arch} with {len(ckpt.class_names)} classes: "
            + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # best effort: only used to word the refusal
        return []


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
