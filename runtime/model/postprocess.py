"""Logits to probabilities, refusing what cannot be a score."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable under any constant shift of the logits."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def finite_rows(logits: np.ndarray) -> np.ndarray:
    """Which rows are usable: an argmax over NaN or infinity is never a prediction."""
    return np.isfinite(np.asarray(logits)).all(axis=-1)
