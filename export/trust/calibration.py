"""Temperature scaling (Guo et al., ICML 2017) and the figures that say whether it helped.

One scalar ``T`` divides the logits before the softmax. It is fitted on held-out logits by
minimising the negative log-likelihood over ``log T`` (so ``T`` stays positive); the argmax, and
with it accuracy and recall, never changes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import log_loss

from btxrd.runtime.labels.metrics import ECE_BINS, expected_calibration_error

# log T is searched within these bounds: T from 0.02 to 55, far beyond any useful temperature.
_LOG_T_BOUNDS = (-4.0, 4.0)
TEMPERATURE_BOUNDS = (math.exp(_LOG_T_BOUNDS[0]), math.exp(_LOG_T_BOUNDS[1]))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the mean NLL of ``labels`` under softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(logits) == 0:
        raise ValueError("no logits to fit a temperature on")
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7})
    return float(math.exp(result.x))


def calibration_metrics(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> dict[str, float]:
    """Mean NLL, multi-class Brier score (sum over classes of the squared error, averaged over
    images) and ECE."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    classes = probabilities.shape[1]
    onehot = np.eye(classes)[labels]
    return {
        "nll": float(log_loss(labels, probabilities, labels=list(range(classes)))),
        "brier": float(((probabilities - onehot) ** 2).sum(axis=1).mean()),
        "ece": expected_calibration_error(labels, probabilities, bins),
    }
