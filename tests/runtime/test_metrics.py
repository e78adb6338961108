"""The one implementation of every reported figure: AUC, ECE and bootstrap intervals (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from btxrd.runtime.labels.metrics import (
    bootstrap_interval,
    classification_metrics,
    expected_calibration_error,
    metric_intervals,
    reliability_table,
    roc_auc,
)

NAMES = ("Normal", "Benign", "Malignant")


def _auc_by_pairs(positive: list[bool], scores: list[float]) -> float:
    """The definition: the share of (positive, negative) pairs ranked right, ties half."""
    pos = [s for p, s in zip(positive, scores, strict=True) if p]
    neg = [s for p, s in zip(positive, scores, strict=True) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=40))
def test_auc_is_the_share_of_pairs_ranked_right(pairs) -> None:
    positive = [p for p, _ in pairs]
    scores = [float(s) for _, s in pairs]
    if all(positive) or not any(positive):
        assert roc_auc(np.array(positive), np.array(scores)) is None
        return
    got = roc_auc(np.array(positive), np.array(scores))
    assert got == pytest.approx(_auc_by_pairs(positive, scores))


def test_ece_of_a_calibrated_and_of_an_overconfident_model() -> None:
    # 10 predictions at confidence 0.8, 8 of them right: calibrated, ECE 0.
    probabilities = np.tile([0.8, 0.1, 0.1], (10, 1))
    y_true = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(y_true, probabilities) == pytest.approx(0.0)
    # The same confidence with half right: ECE |0.5 - 0.8| = 0.3.
    assert expected_calibration_error(np.array([0] * 5 + [1] * 5), probabilities) == (
        pytest.approx(0.3)
    )


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin() -> None:
    """Guo et al.'s bins are (lower, upper]: 0.6 (= 9/15) is in (8/15, 9/15], with 0.58."""
    probabilities = np.array([[0.6, 0.4], [0.58, 0.42]])
    (row,) = reliability_table(np.array([0, 1]), probabilities)
    assert row["count"] == 2 and row["upper"] == pytest.approx(0.6)
    assert expected_calibration_error(np.array([0, 1]), probabilities) == pytest.approx(
        abs(0.5 - 0.59)
    )


def test_bootstrap_interval_holds_the_estimate_narrows_and_repeats() -> None:
    rng = np.random.default_rng(0)
    values = {n: rng.random(n) < 0.8 for n in (40, 4000)}
    widths = {}
    for n, hits in values.items():
        interval = bootstrap_interval(lambda rows, h=hits: float(h[rows].mean()), n)
        assert interval is not None and interval[0] <= hits.mean() <= interval[1]
        widths[n] = interval[1] - interval[0]
        again = bootstrap_interval(lambda rows, h=hits: float(h[rows].mean()), n)
        assert again == interval  # fixed seed: the same data, the same interval
    assert widths[4000] < widths[40] / 5


def test_metric_intervals_mirror_the_metrics() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet([1, 1, 1], 300)
    y_true = probabilities.argmax(axis=1)
    y_true[:60] = rng.integers(0, 3, 60)
    metrics = classification_metrics(y_true, probabilities, NAMES)
    intervals = metric_intervals(y_true, probabilities, NAMES, resamples=200)
    assert intervals["accuracy"][0] <= metrics["accuracy"] <= intervals["accuracy"][1]
    for key in ("precision", "recall", "auc"):
        for name in NAMES:
            low, high = intervals[key][name]
            assert low <= metrics[key][name] <= high
    # A class that is absent has no recall, so no interval either.
    absent = metric_intervals(np.zeros(20, int), np.tile([0.9, 0.05, 0.05], (20, 1)), NAMES, 50)
    assert absent["recall"]["Malignant"] is None
