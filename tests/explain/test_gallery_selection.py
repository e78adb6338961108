"""Which images a gallery shows, on constructed predictions (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from btxrd.explain.selection import KINDS, cell_title, select_examples

# Classes 0 Normal, 1 Benign, 2 Malignant. Rows are images 0..9.
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 2, 1, 0, 1])
PROBS = np.array(
    [
        [0.10, 0.80, 0.10],  # 0 Benign TP, 0.80
        [0.02, 0.95, 0.03],  # 1 Benign TP, 0.95
        [0.60, 0.30, 0.10],  # 2 Benign FN (-> Normal), p(Benign) 0.30
        [0.20, 0.70, 0.10],  # 3 Benign TP, 0.70
        [0.10, 0.85, 0.05],  # 4 Normal -> Benign: Benign FP 0.85
        [0.30, 0.65, 0.05],  # 5 Normal -> Benign: Benign FP 0.65
        [0.05, 0.90, 0.05],  # 6 Malignant -> Benign: Benign FP 0.90
        [0.15, 0.05, 0.80],  # 7 Benign FN (-> Malignant), p(Benign) 0.05
        [0.90, 0.05, 0.05],  # 8 Normal TP
        [0.10, 0.80, 0.10],  # 9 Benign TP, 0.80 (ties with 0: input order)
    ]
)


def test_selection_orders_each_row() -> None:
    chosen = select_examples(Y_TRUE, PROBS, 1, k=3, class_name="Benign")
    assert chosen.indices["TP"] == (1, 0, 9)  # most confident first; 0 before 9 on the tie
    assert chosen.indices["FP"] == (6, 4, 5)  # most confident mistakes first
    assert chosen.indices["FN"] == (7, 2)  # lowest probability of Benign first
    assert chosen.available == {"TP": 4, "FP": 3, "FN": 2}


def test_fewer_than_k_warns_per_row() -> None:
    chosen = select_examples(Y_TRUE, PROBS, 1, k=3, class_name="Benign")
    assert chosen.shortfalls() == ["gallery Benign: only 2 FN example(s), fewer than k=3"]
    malignant = select_examples(Y_TRUE, PROBS, 2, k=3, class_name="Malignant")
    assert malignant.indices == {"TP": (), "FP": (7,), "FN": (6,)}
    assert len(malignant.shortfalls()) == 3


def test_k_limits_every_row() -> None:
    chosen = select_examples(Y_TRUE, PROBS, 1, k=1)
    assert {kind: len(chosen.indices[kind]) for kind in KINDS} == {"TP": 1, "FP": 1, "FN": 1}
    assert chosen.class_name == "1" and chosen.shortfalls() == []


def test_every_image_lands_where_it_belongs() -> None:
    """Over all classes, each misclassified image is one FP and one FN; each hit one TP."""
    k = len(Y_TRUE)
    rows = [select_examples(Y_TRUE, PROBS, c, k) for c in range(3)]
    tps = sorted(i for r in rows for i in r.indices["TP"])
    fps = sorted(i for r in rows for i in r.indices["FP"])
    fns = sorted(i for r in rows for i in r.indices["FN"])
    wrong = [i for i in range(k) if PROBS[i].argmax() != Y_TRUE[i]]
    assert fps == fns == wrong
    assert tps == [i for i in range(k) if i not in wrong]


@pytest.mark.parametrize(
    ("args", "title"),
    [
        (("TP", "Benign", "Benign", 0.966), "TP: Benign -> Benign (0.97)"),
        (("FN", "Malignant", "Normal", 0.5), "FN: Malignant -> Normal (0.50)"),
    ],
)
def test_cell_title(args, title) -> None:
    assert cell_title(*args) == title
