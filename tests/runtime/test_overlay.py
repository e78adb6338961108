"""Heatmap overlays without cv2, checked against cv2's JET where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from btxrd.runtime.output.overlay import (
    caption_for,
    explained_overlay,
    jet,
    normalise_cam,
    overlay,
    png_info,
)


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
    assert tuple(pixels[-1, -1]) == (128, 128, 128)  # no attention: the film untinted
    assert pixels[0, 0, 1] < 100 and pixels[0, 0, 2] < 100  # the hot corner tinted dark red


def test_low_attention_leaves_the_film_readable():
    """The opacity follows the attention: a weak map barely tints, a strong one does."""
    image = Image.new("L", (64, 64), 200)
    weak = overlay(image, np.full((4, 4), 0.1, np.float32), alpha=0.45)
    strong = overlay(image, np.full((4, 4), 1.0, np.float32), alpha=0.45)
    change = {
        name: np.abs(np.asarray(view).astype(int) - 200).max()
        for name, view in (("weak", weak), ("strong", strong))
    }
    assert change["weak"] <= 12 < 50 <= change["strong"]


@pytest.mark.parametrize("class_name", ["Malignant", "Normal"])
def test_an_explained_overlay_carries_caption_scale_and_metadata(class_name, tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160), np.uint8))
    cam = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    caption = caption_for(class_name, 0.93)
    picture = explained_overlay(image, cam, caption, with_original=True)
    assert picture.width == 2 * 160 + 6 and picture.height > 120  # original, overlay, band below
    np.testing.assert_array_equal(np.asarray(picture)[:120, :160, 0], np.asarray(image))
    assert "0.930" in caption[0] and class_name in caption[0]
    assert ("does not point at a lesion" in " ".join(caption)) == (class_name == "Normal")
    path = tmp_path / "o.png"
    picture.save(path, pnginfo=png_info({"class": class_name, "model_sha256": "ab" * 32}))
    with Image.open(path) as reread:
        assert reread.text["btxrd.class"] == class_name
        assert reread.text["btxrd.model_sha256"] == "ab" * 32


def test_overlay_alpha_zero_is_the_image():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    result = overlay(image, np.random.default_rng(1).random((5, 5)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(result), np.asarray(image))
