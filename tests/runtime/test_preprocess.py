"""Preprocessing equals torchvision's Resize -> ToTensor -> Normalize, for every decodable input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from btxrd.runtime.decode.image import decode_pil
from btxrd.runtime.model.contract import Preprocessing
from btxrd.runtime.model.preprocess import preprocess, resize_for_model, to_input_array

PREP = Preprocessing(image_size=(64, 48))


def _image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("L", "1", "P"):
        base = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        if mode == "P":
            base = Image.fromarray(
                rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            ).convert("P", palette=Image.Palette.ADAPTIVE)
        return base if mode == "L" else base.convert(mode) if mode == "1" else base
    if mode in ("RGB", "RGBA", "CMYK", "LA"):
        channels = len(mode)
        return Image.fromarray(
            rng.integers(0, 256, (height, width, channels), dtype=np.uint8), mode=mode
        )
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(
            rng.integers(-(2**31), 2**31 - 1, (height, width), dtype=np.int64).astype(np.int32)
        )
    if mode == "F":
        return Image.fromarray(rng.normal(0, 1e3, (height, width)).astype(np.float32))
    raise AssertionError(mode)


def test_output_is_float32_three_channel_contiguous():
    for mode in ("L", "RGB"):
        array = preprocess(decode_pil(_image(mode, 90, 70, 1)), PREP)
        assert array.dtype == np.float32
        assert array.shape == (3, 64, 48)
        assert array.flags["C_CONTIGUOUS"]


def test_grayscale_replication_equals_converting_to_rgb_first():
    gray = _image("L", 123, 77, 2)
    shortcut = preprocess(gray, PREP)
    via_rgb = preprocess(gray.convert("RGB"), PREP)
    np.testing.assert_array_equal(shortcut, via_rgb)


def test_image_already_at_input_size_is_not_resampled():
    image = _image("RGB", 48, 64, 3)
    assert resize_for_model(image, PREP) is image
    expected = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
    prep = Preprocessing(image_size=(64, 48), mean=(0.5,) * 3, std=(0.25,) * 3)
    np.testing.assert_allclose(to_input_array(image, prep), expected, rtol=0, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("mode", "size", "image_size"),
    [
        ("RGB", (300, 200), (64, 64)),  # shrink (Pillow antialiases, as torchvision does)
        ("RGB", (40, 30), (64, 48)),  # enlarge, non-square
        ("L", (257, 311), (224, 224)),
        ("RGB", (64, 64), (64, 64)),  # identity size
    ],
)
def test_matches_torchvision_transforms(mode, size, image_size):
    pytest.importorskip("torch")
    transforms = pytest.importorskip("torchvision.transforms")
    prep = Preprocessing(image_size=image_size)
    image = _image(mode, *size, seed=4)
    reference = transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )(image.convert("RGB")).numpy()
    ours = preprocess(decode_pil(image), prep)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


MODES = ("L", "RGB", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(16, 160),
    height=st.integers(16, 160),
    out_h=st.integers(8, 96),
    out_w=st.integers(8, 96),
    seed=st.integers(0, 2**16),
)
def test_any_decodable_image_gives_a_finite_tensor_of_the_contract_shape(
    mode, width, height, out_h, out_w, seed
):
    prep = Preprocessing(image_size=(out_h, out_w))
    array = preprocess(decode_pil(_image(mode, width, height, seed)), prep)
    assert array.shape == (3, out_h, out_w)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]
    assert np.isfinite(array).all()
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    assert (array >= (0 - mean) / std - 1e-5).all()
    assert (array <= (1 - mean) / std + 1e-5).all()
