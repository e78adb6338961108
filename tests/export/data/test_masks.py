"""Lesion masks against hand-made expectations: polygon, rectangle corners in any order, several
lesions, the rectangle fallback, the stretch to the model input, EXIF-rotated images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from btxrd.export.data.labelme import read_annotation
from btxrd.export.data.masks import lesion_mask
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.model.contract import Preprocessing


def _prep(height: int, width: int) -> Preprocessing:
    return Preprocessing(image_size=(height, width))


def _expected(shape: tuple[int, int], *blocks: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for rows, cols in blocks:
        mask[rows, cols] = True
    return mask


SQUARE = [(10, 5), (19, 5), (19, 14), (10, 14)]  # pixels x 10..19, y 5..14 inclusive


def test_polygon_fills_the_outline(labelme) -> None:
    path = labelme(40, 30, [("osteochondroma", "polygon", SQUARE)])
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    assert built.ok and (built.polygons, built.rectangles) == (1, 0)
    np.testing.assert_array_equal(built.mask, _expected((30, 40), (slice(5, 15), slice(10, 20))))


def test_triangle_is_not_its_bounding_box(labelme) -> None:
    path = labelme(40, 40, [("osteosarcoma", "polygon", [(0, 0), (20, 0), (0, 20)])])
    mask = lesion_mask(read_annotation(path), (40, 40), _prep(40, 40)).mask
    assert mask[1, 1] and mask[0, 20] and mask[20, 0]
    assert not mask[15, 15] and not mask[20, 20]
    assert 200 < mask.sum() < 250  # about half of the 21 x 21 box


@pytest.mark.parametrize(
    "corners",
    [
        [(10, 5), (19, 14)],
        [(19, 14), (10, 5)],
        [(19, 5), (10, 14)],
        [(10, 14), (19, 5)],
    ],
    ids=["tl-br", "br-tl", "tr-bl", "bl-tr"],
)
def test_rectangle_corners_in_any_order(labelme, corners) -> None:
    path = labelme(40, 30, [("giant cell tumor", "rectangle", corners)])
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    np.testing.assert_array_equal(built.mask, _expected((30, 40), (slice(5, 15), slice(10, 20))))
    assert (built.polygons, built.rectangles) == (0, 1)
    assert "without a polygon" in built.describe()["note"]


def test_polygon_is_used_not_its_rectangle(labelme) -> None:
    path = labelme(
        40,
        30,
        [
            ("osteochondroma", "rectangle", [(8, 3), (21, 16)]),
            ("osteochondroma", "polygon", SQUARE),
        ],
    )
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    np.testing.assert_array_equal(built.mask, _expected((30, 40), (slice(5, 15), slice(10, 20))))
    assert (built.lesions, built.polygons, built.rectangles) == (1, 1, 0)
    assert "note" not in built.describe()


def test_several_lesions_and_a_polygonless_one(labelme) -> None:
    second = [(30, 20), (35, 20), (35, 25), (30, 25)]
    path = labelme(
        40,
        30,
        [
            ("multiple osteochondromas", "rectangle", [(19, 14), (10, 5)]),
            ("multiple osteochondromas", "polygon", SQUARE),
            ("multiple osteochondromas", "polygon", second),
            ("multiple osteochondromas", "rectangle", [(30, 20), (35, 25)]),
            ("multiple osteochondromas", "rectangle", [(2, 22), (5, 27)]),  # no polygon
        ],
    )
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    expected = _expected(
        (30, 40),
        (slice(5, 15), slice(10, 20)),
        (slice(20, 26), slice(30, 36)),
        (slice(22, 28), slice(2, 6)),
    )
    np.testing.assert_array_equal(built.mask, expected)
    assert (built.lesions, built.polygons, built.rectangles) == (3, 2, 1)


def test_mask_is_stretched_like_the_image(labelme) -> None:
    """80 x 15 image to a 40 x 30 input: x halves, y doubles (no aspect kept, like the image)."""
    path = labelme(80, 15, [("osteosarcoma", "polygon", [(20, 5), (39, 5), (39, 9), (20, 9)])])
    built = lesion_mask(read_annotation(path), (80, 15), _prep(30, 40))
    assert built.mask.shape == (30, 40)
    np.testing.assert_array_equal(built.mask, _expected((30, 40), (slice(10, 20), slice(10, 20))))


def test_exif_rotated_image_uses_the_upright_frame(tmp_path, labelme) -> None:
    """LabelMe annotates the upright image; load_image makes the same upright image."""
    upright = np.full((60, 40), 20, dtype=np.uint8)  # 40 wide, 60 high
    upright[40:55, 5:15] = 230  # the lesion, low on the left
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as the camera wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "IMG000001.jpeg"
    stored.save(path, quality=95, exif=exif)
    assert Image.open(path).size == (60, 40)

    decoded = load_image(path)
    assert decoded.image.size == (40, 60)
    annotation = labelme(
        40, 60, [("osteosarcoma", "polygon", [(5, 40), (14, 40), (14, 54), (5, 54)])]
    )
    built = lesion_mask(read_annotation(annotation), decoded.image.size, _prep(60, 40))
    np.testing.assert_array_equal(built.mask, _expected((60, 40), (slice(40, 55), slice(5, 15))))
    pixels = np.asarray(decoded.image)
    assert pixels[built.mask].mean() > 200 and pixels[~built.mask].mean() < 40


def test_annotation_in_the_unrotated_frame_gives_no_mask(labelme) -> None:
    path = labelme(60, 40, [("osteosarcoma", "polygon", SQUARE)])
    built = lesion_mask(read_annotation(path), (40, 60), _prep(60, 40))
    assert built.mask is None
    assert "60 x 40" in built.reason and "40 x 60" in built.reason and "EXIF" in built.reason


def test_annotation_for_another_size_gives_no_mask(labelme) -> None:
    path = labelme(100, 80, [("osteosarcoma", "polygon", SQUARE)])
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    assert built.mask is None and "100 x 80" in built.reason
    assert built.describe()["reason"] == built.reason


def test_annotation_without_shapes_gives_no_mask(labelme) -> None:
    path = labelme(40, 30, [])
    built = lesion_mask(read_annotation(path), (40, 30), _prep(30, 40))
    assert built.mask is None and "no rectangle or polygon" in built.reason


def _crosses_by_every_pair(points: list[tuple[float, float]]) -> bool:
    """The definition, pair by pair: two non-neighbouring edges cross properly."""
    n = len(points)

    def side(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            (a, b), (c, d) = edges[i], edges[j]
            if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0:
                return True
    return False


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 12)).map(lambda p: (float(p[0]), float(p[1]))),
        min_size=3,
        max_size=14,
    )
)
def test_self_crossing_check_agrees_with_every_pair(points) -> None:
    from btxrd.export.data.masks import _crosses_itself

    assert _crosses_itself(np.asarray(points)) == _crosses_by_every_pair(points)
