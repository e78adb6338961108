"""Classification metrics without scikit-learn: accuracy, per-class precision/recall, one-vs-rest
AUC, confusion matrix. Used by training (model card) and explain (galleries)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum statistic (ties count half)."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over tied scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[is_positive.astype(bool)].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


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
