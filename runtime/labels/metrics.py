"""Classification metrics with numpy only: accuracy, per-class precision/recall, one-vs-rest AUC,
the confusion matrix, expected calibration error, and percentile-bootstrap 95 % intervals.

Used by ``btxrd-run --labels`` (so they live in the runtime), training (the model card) and the
explainer's galleries: one implementation for every figure btxrd reports. numpy only, because the
runtime's install stays small: scikit-learn and scipy, which also compute these, would add about
150 MB to an environment that is about 200 MB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum statistic (ties count half)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(np.asarray(scores)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # average rank of each tie
    rank_sum = ranks[is_positive].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def reliability_table(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per non-empty confidence bin ``(lower, upper]`` (Guo et al. 2017's bins): count,
    accuracy and mean confidence of the top-1 predictions in it."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of exactly 0 cannot occur.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        inside = index == i
        if inside.any():
            rows.append(
                {
                    "lower": float(edges[i]),
                    "upper": float(edges[i + 1]),
                    "count": int(inside.sum()),
                    "accuracy": float(correct[inside].mean()),
                    "confidence": float(confidence[inside].mean()),
                }
            )
    return rows


def expected_calibration_error(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> float | None:
    """ECE with ``bins`` equal-width confidence bins (Guo et al. 2017): the mean, weighted by
    bin size, of |accuracy - mean confidence| of the top-1 predictions in each bin (the
    ``reliability_table``'s bins). None for no predictions. Written here: scikit-learn's
    ``calibration_curve`` is binary and drops the bin weights."""
    if len(y_true) == 0:
        return None
    table = reliability_table(y_true, probabilities, bins)
    gaps = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table)
    return float(gaps / len(y_true))


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float | None],
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> list[float] | None:
    """Percentile-bootstrap interval of ``statistic(indices)`` over ``n`` items resampled with
    replacement (fixed seed: the same data give the same interval). None when the statistic is
    undefined in too many resamples (fewer than half) or there is nothing to resample."""
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    return _percentiles([statistic(rng.integers(0, n, n)) for _ in range(resamples)], level)


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    y_true = np.asarray(y_true)
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    precision, recall, auc = {}, {}, {}
    for c, name in enumerate(class_names):
        predicted, actual = matrix[:, c].sum(), matrix[c, :].sum()
        precision[name] = float(matrix[c, c] / predicted) if predicted else 0.0
        recall[name] = float(matrix[c, c] / actual) if actual else 0.0
        auc[name] = roc_auc(y_true == c, probabilities[:, c])
    aucs = [a for a in auc.values() if a is not None]
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "precision": precision,
        "recall": recall,
        "auc": auc,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
        "support": {name: int(matrix[c, :].sum()) for c, name in enumerate(class_names)},
    }


def metric_intervals(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """Bootstrap 95 % intervals of ``classification_metrics``' figures (images resampled with
    replacement), and the ECE with its interval; keys mirror ``classification_metrics``."""
    y_true = np.asarray(y_true)

    def figures(rows: np.ndarray) -> dict[str, Any]:
        return classification_metrics(y_true[rows], probabilities[rows], class_names)

    samples = _resampled(figures, len(y_true), resamples)

    def interval(pick: Callable[[dict[str, Any]], float | None]) -> list[float] | None:
        return _percentiles([pick(sample) for sample in samples])

    intervals: dict[str, Any] = {
        "level": 0.95,
        "resamples": resamples,
        "method": "percentile bootstrap over images",
        "accuracy": interval(lambda m: m["accuracy"]),
        "macro_auc": interval(lambda m: m["macro_auc"]),
    }

    def per_class(key: str, name: str) -> list[float] | None:
        # A resample without the class has no recall (or AUC) for it: that resample is skipped.
        return interval(lambda m: m[key][name] if m["support"][name] else None)

    for key in ("precision", "recall", "auc"):
        intervals[key] = {name: per_class(key, name) for name in class_names}
    intervals["ece"] = bootstrap_interval(
        lambda rows: expected_calibration_error(y_true[rows], probabilities[rows]),
        len(y_true),
        resamples=resamples,
    )
    return intervals


def _resampled(
    figures: Callable[[np.ndarray], dict[str, Any]], n: int, resamples: int, seed: int = 0
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [figures(rng.integers(0, n, n)) for _ in range(resamples)] if n else []


def _percentiles(values: list[float | None], level: float = 0.95) -> list[float] | None:
    """The central ``level`` interval of the defined values; None when the statistic was
    undefined in more than half the resamples (e.g. a class that rarely appears)."""
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    if not values or len(defined) < len(values) / 2:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]
