"""Heatmap overlays without cv2, checked against cv2's JET where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from btxrd.runtime.overlay import jet, normalise_cam, overlay


@pytest.mark.torch  # cv2 comes with the [explain] extras
def test_jet_matches_opencv_colormap_jet():
    cv2 = pytest.importorskip("cv2")
    levels = np.arange(256, dtype=np.uint8)
    reference = cv2.applyColorMap(levels[None, :], cv2.COLORMAP_JET)[0][:, ::-1]  # BGR -> RGB
    ours = jet(levels / 255.0)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_normalise_cam_spans_zero_to_one():
    cam = np.array([[0.5, 2.0], [1.0, 3.5]], dtype=np.float32)
    normalised = normalise_cam(cam)
    assert normalised is not None
    assert normalised.min() == 0.0 and normalised.max() == 1.0


@pytest.mark.parametrize(
    "cam",
    [np.zeros((7, 7)), np.full((7, 7), 3.0), np.array([[np.nan, 1.0], [0.0, 2.0]])],
    ids=["zeros", "constant", "nan"],
)
def test_degenerate_cams_give_none(cam):
    assert normalise_cam(cam) is None


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_overlay_is_rgb_at_the_image_size(mode):
    image = Image.new(mode, (90, 60), 128 if mode == "L" else (128, 128, 128))
    cam = np.zeros((7, 7), dtype=np.float32)
    cam[0, 0] = 1.0
    result = overlay(image, cam, alpha=0.5)
    assert result.mode == "RGB"
    assert result.size == (90, 60)
    pixels = np.asarray(result).astype(int)
    assert pixels[0, 0, 0] > pixels[-1, -1, 0]  # hot corner is redder
    assert pixels[-1, -1, 2] > pixels[0, 0, 2]  # cold corner is bluer


def test_overlay_alpha_zero_is_the_image():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    result = overlay(image, np.random.default_rng(1).random((5, 5)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(result), np.asarray(image))
