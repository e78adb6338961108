"""onnxruntime sessions with one setting changed at a time from what the runtime uses.

``RUNTIME`` mirrors ``btxrd.runtime.model._open_session`` (intra-op threads = all cores, one
inter-op thread, ORT_ENABLE_ALL, sequential). ``run.py`` checks the mirror against the runtime's
own session, so a change there shows up here as a parity or speed difference, not silently.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from btxrd.runtime.contract import INPUT_NAME, LOGITS_NAME

_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


@dataclass(frozen=True)
class Variant:
    """Session settings; the defaults are the runtime's."""

    name: str = "runtime settings"
    threads: int | None = None  # None: every core, as the runtime does
    level: str = "all"
    mem_arena: bool = True
    mem_pattern: bool = True
    parallel: bool = False
    spinning: bool = True  # onnxruntime's default
    model: Path | None = None  # another graph file (e.g. saved after optimisation)


RUNTIME = Variant()
SETTLE_S = 0.05


def option_variants(optimised_graph: Path | None) -> list[Variant]:
    """The runtime's settings, then each alternative worth trying, one change at a time."""
    variants = [
        RUNTIME,
        replace(RUNTIME, name="intra_op threads 1", threads=1),
        replace(RUNTIME, name="ORT_ENABLE_EXTENDED", level="extended"),
        replace(RUNTIME, name="cpu mem arena off", mem_arena=False),
        replace(RUNTIME, name="mem pattern off", mem_pattern=False),
        replace(RUNTIME, name="ORT_PARALLEL (2 inter-op)", parallel=True),
        replace(RUNTIME, name="allow_spinning 0", spinning=False),
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = variant.threads or os.cpu_count() or 1
    options.inter_op_num_threads = 2 if variant.parallel else 1
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if variant.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.graph_optimization_level = _LEVELS[variant.level]
    options.enable_cpu_mem_arena = variant.mem_arena
    options.enable_mem_pattern = variant.mem_pattern
    options.log_severity_level = 3
    if not variant.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
