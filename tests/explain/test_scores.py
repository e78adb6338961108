"""IoU, IoU across thresholds, pointing game and energy on constructed cases, plus IoU invariants
with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from btxrd.explain.scores import (
    THRESHOLDS,
    cell_peaks,
    energy_in_mask,
    iou_at,
    mask_iou,
    pointing_hit,
    pointing_reachable,
    score_attention,
    summarise,
)


def _block(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


LESION = _block((32, 32), slice(8, 16), slice(8, 16))  # 64 pixels


def test_iou_of_shifted_blocks() -> None:
    a = _block((20, 20), slice(0, 10), slice(0, 10))
    b = _block((20, 20), slice(0, 10), slice(5, 15))
    assert mask_iou(a, b) == pytest.approx(50 / 150)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, ~a) == 0.0


def test_iou_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.ones((2, 2), bool), np.ones((2, 3), bool))


def test_cam_equal_to_the_lesion_scores_perfectly() -> None:
    cam = LESION.astype(np.float32)
    scores = score_attention(cam, LESION)
    assert scores.iou == 1.0 and scores.iou_best == 1.0
    assert scores.pointing_hit and scores.energy_in_lesion == 1.0
    assert scores.lesion_fraction == pytest.approx(64 / 1024)
    assert set(scores.iou_by_threshold) == {f"{t:g}" for t in THRESHOLDS}


def test_cam_elsewhere_scores_zero() -> None:
    cam = _block((32, 32), slice(20, 30), slice(20, 30)).astype(np.float32)
    scores = score_attention(cam, LESION)
    assert scores.iou == 0.0 and scores.iou_best == 0.0
    assert not scores.pointing_hit and scores.energy_in_lesion == 0.0


def test_best_threshold_finds_the_right_blob_size() -> None:
    """Lesion at 1.0 inside a ring at 0.5: low thresholds take the ring too, 0.6 and above take
    exactly the lesion. The best is the lowest threshold reaching the highest IoU."""
    cam = np.zeros((32, 32), np.float32)
    cam[4:20, 4:20] = 0.5  # 256 pixels including the lesion
    cam[LESION] = 1.0
    scores = score_attention(cam, LESION)
    assert scores.iou_by_threshold["0.3"] == pytest.approx(64 / 256)
    assert scores.iou == pytest.approx(64 / 256)  # cam >= 0.5 includes the ring
    assert scores.iou_by_threshold["0.6"] == 1.0 and scores.iou_by_threshold["0.9"] == 1.0
    assert (scores.iou_best, scores.best_threshold) == (1.0, 0.6)
    assert scores.energy_in_lesion == pytest.approx(64 / (64 + 0.5 * 192))


def test_iou_threshold_is_a_parameter() -> None:
    cam = np.zeros((32, 32), np.float32)
    cam[4:20, 4:20] = 0.5
    cam[LESION] = 1.0
    assert iou_at(cam, LESION, 0.7) == 1.0
    assert score_attention(cam, LESION, iou_threshold=0.7).iou == 1.0


def test_cam_is_normalised_before_thresholds() -> None:
    """A CAM in arbitrary units scores like its min-max normalised self."""
    cam = np.where(LESION, 7.0, 3.0).astype(np.float32)
    assert iou_at(cam, LESION, 0.5) == 1.0


@pytest.mark.parametrize(
    ("peak", "hit"),
    [((10, 10), True), ((8, 8), True), ((7, 8), False), ((30, 2), False)],
    ids=["inside", "corner-inside", "just-outside", "far"],
)
def test_pointing_game(peak, hit) -> None:
    cam = np.full((32, 32), 0.2, np.float32)
    cam[peak] = 1.0
    assert pointing_hit(cam, LESION) is hit


def test_pointing_game_ties_need_half_inside() -> None:
    cam = np.zeros((32, 32), np.float32)
    cam[10, 10] = cam[10, 11] = cam[30, 30] = 1.0  # 2 of 3 maxima inside
    assert pointing_hit(cam, LESION)
    cam[0, 0] = cam[0, 1] = 1.0  # now 2 of 5
    assert not pointing_hit(cam, LESION)


def test_low_resolution_cam_is_upsampled_to_the_mask_grid() -> None:
    """A 4 x 4 CAM whose hot cell covers rows/cols 8..15 of a 32 x 32 mask."""
    cam = np.zeros((4, 4), np.float32)
    cam[1, 1] = 1.0
    assert pointing_hit(cam, LESION)
    assert energy_in_mask(cam, LESION) > 0.4
    scores = score_attention(cam, LESION)
    assert scores.iou_best > 0.5
    moved = np.zeros((4, 4), np.float32)
    moved[3, 3] = 1.0
    assert not pointing_hit(moved, LESION)


@pytest.mark.parametrize(
    ("rows", "cols", "grid", "reachable"),
    [
        (slice(20, 30), slice(20, 30), (7, 7), False),  # between the centres 15/16 and 47/48
        (slice(40, 56), slice(40, 56), (7, 7), True),  # holds the centre 47/48
        (slice(20, 30), slice(20, 30), (14, 14), True),  # the finer grid's centre 23/24
        (slice(0, 11), slice(0, 11), (7, 7), False),  # border cell peaks on 0..15: 121 of 256
        (slice(0, 12), slice(0, 12), (7, 7), True),  # 144 of 256: half of the tie
        (slice(20, 30), slice(44, 52), (7, 7), False),  # a centre column, but no centre row
    ],
    ids=["between", "centre", "finer-grid", "border-small", "border-half", "one-axis"],
)
def test_pointing_reachable_on_constructed_lesions(rows, cols, grid, reachable) -> None:
    assert pointing_reachable(_block((224, 224), rows, cols), grid) is reachable


def test_cell_peaks_at_224_px() -> None:
    assert [p.tolist() for p in cell_peaks(7, 224)[1:3]] == [[47, 48], [79, 80]]
    assert cell_peaks(7, 224)[0].tolist() == list(range(16))  # clamped border
    assert cell_peaks(7, 224)[6].tolist() == list(range(208, 224))
    assert cell_peaks(14, 224)[1].tolist() == [23, 24]


@pytest.mark.torch  # cv2 comes with the [explain] extras
@pytest.mark.parametrize(("size", "grid"), [(224, (7, 7)), (224, (14, 14)), (64, (5, 3))])
def test_pointing_reachable_agrees_with_upsampled_one_hot_maps(size, grid) -> None:
    """The independent computation: every one-hot cell map, upsampled with cv2 as
    pytorch-grad-cam does, through the pointing game itself. Reachable means one of them hits."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    maps = []
    for index in range(grid[0] * grid[1]):
        one_hot = np.zeros(grid, np.float32)
        one_hot.flat[index] = 1.0
        maps.append(cv2.resize(one_hot, (size, size), interpolation=cv2.INTER_LINEAR))
    outcomes = set()
    for _ in range(60):
        mask = np.zeros((size, size), bool)
        for _lesion in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 4, 2)
            h, w = rng.integers(2, size // 5, 2)
            mask[y : y + h, x : x + w] = True
        expected = any(pointing_hit(m, mask) for m in maps)
        assert pointing_reachable(mask, grid) is expected
        outcomes.add(expected)
    assert outcomes == {True, False}  # the cases exercise both answers


def test_evenly_spread_cam_energy_is_the_lesion_share() -> None:
    checkerboard = (np.indices((32, 32)).sum(axis=0) % 2).astype(np.float32)
    assert energy_in_mask(checkerboard, LESION) == pytest.approx(64 / 1024)
    assert energy_in_mask(np.full((32, 32), 3.0), LESION) is None  # flat: nothing to share


def test_empty_lesion_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        score_attention(np.ones((4, 4)), np.zeros((4, 4), bool))


def test_summarise_skips_nulls() -> None:
    assert summarise([0.2, None, 0.4, 0.9]) == {
        "mean": pytest.approx(0.5),
        "median": pytest.approx(0.4),
        "n": 3,
    }
    assert summarise([None]) == {"mean": None, "median": None, "n": 0}


masks = arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9)))


@given(st.data())
def test_iou_invariants(data) -> None:
    a = data.draw(masks)
    b = data.draw(arrays(bool, a.shape))
    value = mask_iou(a, b)
    assert value == mask_iou(b, a)
    assert 0.0 <= value <= 1.0
    assert (value == 1.0) == (bool(a.any()) and np.array_equal(a, b))


@given(arrays(bool, (8, 8)))
def test_iou_with_itself(a) -> None:
    assert mask_iou(a, a) == (1.0 if a.any() else 0.0)
