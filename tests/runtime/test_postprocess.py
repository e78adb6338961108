"""Softmax and the finite-row check, as properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from btxrd.runtime.model.postprocess import finite_rows, softmax

LOGITS = hnp.arrays(
    dtype=np.float64,
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200, deadline=None)
@given(LOGITS)
def test_softmax_rows_are_probabilities(logits):
    probs = softmax(logits)
    assert probs.shape == logits.shape
    assert np.isfinite(probs).all()
    assert (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(LOGITS, st.floats(-1e3, 1e3, allow_nan=False))
def test_softmax_is_invariant_to_a_constant_shift(logits, shift):
    np.testing.assert_allclose(softmax(logits + shift), softmax(logits), rtol=0, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(LOGITS)
def test_softmax_keeps_the_argmax(logits):
    np.testing.assert_array_equal(
        softmax(logits).max(axis=-1),
        np.take_along_axis(softmax(logits), logits.argmax(axis=-1)[:, None], axis=-1)[:, 0],
    )


def test_softmax_of_huge_float32_logits_does_not_overflow():
    probs = softmax(np.array([[1e30, 0.0, -1e30]], dtype=np.float32))
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0]])


@settings(max_examples=200, deadline=None)
@given(
    LOGITS,
    st.data(),
)
def test_finite_rows_flags_exactly_the_rows_with_nan_or_infinity(logits, data):
    rows = logits.shape[0]
    poisoned = data.draw(st.sets(st.integers(0, rows - 1), max_size=rows))
    bad_value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    values = logits.copy()
    for row in poisoned:
        column = data.draw(st.integers(0, values.shape[1] - 1))
        values[row, column] = bad_value
    expected = np.array([row not in poisoned for row in range(rows)])
    np.testing.assert_array_equal(finite_rows(values), expected)
