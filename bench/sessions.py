"""onnxruntime sessions with one setting changed at a time from what the runtime uses.

``RUNTIME`` is the runtime's own session settings, ``btxrd.runtime.model.session.session_options``
(imported, not copied: intra-op threads = all cores, one inter-op thread, ORT_ENABLE_ALL,
sequential, memory pattern off, intra-op spinning off). A ``Variant`` overrides only the
settings it names, so each alternative differs from the runtime in exactly what its name says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from btxrd.runtime.model.contract import INPUT_NAME, LOGITS_NAME
from btxrd.runtime.model.session import session_options

_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


@dataclass(frozen=True)
class Variant:
    """Session settings: ``None`` leaves a setting as the runtime has it (``session_options``),
    a value overrides it. ``Variant()`` is the runtime's session."""

    name: str = "runtime settings"
    threads: int | None = None  # None: every core, as the runtime does
    level: str | None = None  # a key of _LEVELS; the runtime: "all"
    mem_arena: bool | None = None  # the runtime: on (onnxruntime's default)
    mem_pattern: bool | None = None  # the runtime: off (onnxruntime's default is on)
    parallel: bool = False  # ORT_PARALLEL with 2 inter-op threads; the runtime: sequential, 1
    spinning: bool | None = None  # the runtime: intra-op off (onnxruntime's default is on)
    model: Path | None = None  # another graph file (e.g. saved after optimisation)


RUNTIME = Variant()
SETTLE_S = 0.05


def option_variants(optimised_graph: Path | None) -> list[Variant]:
    """The runtime's settings, then each alternative worth trying, one change at a time (the
    runtime turns the memory pattern and spinning off, so those alternatives turn them on)."""
    variants = [
        RUNTIME,
        replace(RUNTIME, name="intra_op threads 1", threads=1),
        replace(RUNTIME, name="ORT_ENABLE_EXTENDED", level="extended"),
        replace(RUNTIME, name="cpu mem arena off", mem_arena=False),
        replace(RUNTIME, name="mem pattern on (onnxruntime default)", mem_pattern=True),
        replace(RUNTIME, name="ORT_PARALLEL (2 inter-op)", parallel=True),
        replace(RUNTIME, name="allow_spinning 1 (onnxruntime default)", spinning=True),
    ]
    if optimised_graph is not None:
        variants.append(
            replace(
                RUNTIME,
                name="graph saved after ORT_ENABLE_ALL",
                level="disable",
                model=optimised_graph,
            )
        )
    return variants


def open_session(model: Path, variant: Variant = RUNTIME) -> ort.InferenceSession:
    options = _options(variant)
    path = variant.model or model
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def save_optimised(model: Path, out: Path, level: str = "all") -> Path:
    """Write the graph as onnxruntime leaves it after optimisation at ``level``."""
    options = _options(replace(RUNTIME, level=level))
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return out


def settle() -> None:
    """Pause between timed cases so the previous session's threads stop spinning (they spin
    for some tens of milliseconds after a run, and would steal the next case's cores)."""
    time.sleep(SETTLE_S)


def logits(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run([LOGITS_NAME], {INPUT_NAME: batch})[0]


def probabilities(session: ort.InferenceSession, inputs: np.ndarray, batch: int = 8) -> np.ndarray:
    """Softmax over all ``inputs`` (N, 3, H, W), in batches of ``batch``."""
    rows = [logits(session, inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    z = np.concatenate(rows).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _options(variant: Variant) -> ort.SessionOptions:
    options = session_options(variant.threads)
    if variant.parallel:
        options.inter_op_num_threads = 2
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if variant.level is not None:
        options.graph_optimization_level = _LEVELS[variant.level]
    if variant.mem_arena is not None:
        options.enable_cpu_mem_arena = variant.mem_arena
    if variant.mem_pattern is not None:
        options.enable_mem_pattern = variant.mem_pattern
    if variant.spinning is not None:
        spin = "1" if variant.spinning else "0"
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            _set_entry(options, key, spin)
    return options


def _set_entry(options: ort.SessionOptions, key: str, value: str) -> None:
    """Set a session config entry unless it already holds ``value`` (onnxruntime warns on
    stderr whenever an entry is overwritten, so only a real change does that)."""
    try:
        if options.get_session_config_entry(key) == value:
            return
    except RuntimeError:  # not set yet
        pass
    options.add_session_config_entry(key, value)
