"""Which images a gallery shows (torch-free): for class c, the k most confident true positives,
the k most confident false positives (highest probability of c among images predicted c that
are not c) and the k false negatives with the lowest probability of c."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("TP", "FP", "FN")
# Best and worst cases shown in annotation_comparison.png.
DEFAULT_PANELS = 5


@dataclass(frozen=True)
class Selection:
    """Indices chosen for one class, best first, and how many candidates existed."""

    class_name: str
    k: int
    indices: dict[str, tuple[int, ...]]
    available: dict[str, int]

    def shortfalls(self) -> list[str]:
        """One warning per row that has fewer than k examples."""
        return [
            f"gallery {self.class_name}: only {self.available[kind]} {kind} example(s), "
            f"fewer than k={self.k}"
            for kind in KINDS
            if self.available[kind] < self.k
        ]


def select_examples(
    y_true: np.ndarray, probabilities: np.ndarray, class_index: int, k: int, class_name: str = ""
) -> Selection:
    """TPs and FPs by descending probability of the class, FNs by ascending (ties: input order)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    y_pred = probabilities.argmax(axis=1)
    p = probabilities[:, class_index]
    groups = {
        "TP": ((y_true == class_index) & (y_pred == class_index), -p),
        "FP": ((y_true != class_index) & (y_pred == class_index), -p),
        "FN": ((y_true == class_index) & (y_pred != class_index), p),
    }
    indices, available = {}, {}
    for kind, (member, key) in groups.items():
        candidates = np.flatnonzero(member)
        ordered = candidates[np.argsort(key[candidates], kind="stable")]
        indices[kind] = tuple(int(i) for i in ordered[:k])
        available[kind] = len(candidates)
    return Selection(class_name or str(class_index), k, indices, available)


def cell_title(kind: str, true_name: str, predicted_name: str, probability: float) -> str:
    """``TP: Benign -> Benign (0.97)``: true class -> predicted class (its probability)."""
    return f"{kind}: {true_name} -> {predicted_name} ({probability:.2f})"
