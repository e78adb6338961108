"""Decoding against independent decoders: tifffile reads the TIFFs and pypng the PNGs that
``load_image`` reads through Pillow, and the documented normalisation is applied to their
arrays here with numpy (orientation by ``np.rot90``, WhiteIsZero inverted, deep data scaled by its
real range, alpha flattened onto black). Every layout is either decoded to within one grey level
of that, or refused with one line naming the file."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import InputError

tifffile = pytest.importorskip("tifffile")
png = pytest.importorskip("png")  # pypng


def _load(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return np.asarray(load_image(path).image)


def _range8(values: np.ndarray) -> np.ndarray:
    """Real range onto 0..255 over every channel together."""
    data = values.astype(np.float64)
    low, high = data.min(), data.max()
    return np.rint((data - low) * 255.0 / (high - low)).astype(np.uint8)


def _flatten(colour8: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
    """Alpha over black; grayscale comes out as RGB."""
    if colour8.ndim == 2:
        colour8 = np.stack([colour8] * 3, axis=-1)
    return np.rint(colour8 * (alpha8[..., None] / 255.0)).astype(np.uint8)


def _assert_within_one_level(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


# --- orientation --------------------------------------------------------------------------

# TIFF Orientation -> the upright picture from the stored array (TIFF 6.0, section 8).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("strips", ["one-strip", "many-strips"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("orientation", list(UPRIGHT))
def test_tiff_orientation_matches_tifffile_turned_by_numpy(tmp_path, orientation, dtype, strips):
    """Pillow read uncompressed TIFF strips with Orientation 5-8 at the turned size (a named
    file is memory-mapped at ``im.size``, which that plugin has already swapped): scrambled."""
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 4096 if dtype == "uint16" else 256, (60, 90)).astype(dtype)
    path = tmp_path / "turned.tif"
    tifffile.imwrite(
        path,
        stored,
        rowsperstrip=7 if strips == "many-strips" else None,
        extratags=[(274, "H", 1, orientation, True)],
    )
    upright = UPRIGHT[orientation](tifffile.imread(path))
    want = upright if dtype == "uint8" else _range8(upright)
    decoded = load_image(path)
    np.testing.assert_array_equal(np.asarray(decoded.image), want)
    if orientation > 1:
        assert f"EXIF orientation {orientation} applied" in decoded.notes


# --- TIFF sample layouts ------------------------------------------------------------------

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]
PHOTOMETRIC = ["minisblack", "miniswhite", "rgb"]

# What btxrd must read in little-endian files without alpha (the rest may be refused in one
# line, never decoded wrongly; Pillow opens fewer big-endian layouts).
MUST_READ = (
    {
        (dtype, "minisblack")
        for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")
    }
    | {("uint8", "miniswhite"), ("uint16", "miniswhite"), ("float32", "miniswhite")}
    | {
        ("uint8", "rgb"),
        ("uint16", "rgb"),
    }
)


def _samples(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0, 100, shape).astype(dtype)
    info = np.iinfo(dtype)
    values = rng.integers(max(info.min, -3000), min(info.max, 70_000), shape, endpoint=True)
    values = values.astype(dtype)
    values.flat[0] = info.max if dtype in ("uint32", "int8") else values.flat[0]  # would wrap
    values.flat[1] = info.min if dtype == "int8" else values.flat[1]
    return values


def _reference(stored: np.ndarray, photometric: str, alpha: bool) -> np.ndarray:
    colour = stored[..., :-1] if alpha else stored
    if colour.ndim == 3 and colour.shape[-1] == 1:
        colour = colour[..., 0]
    data = colour.astype(np.float64)
    if photometric == "miniswhite":
        data = (255.0 - data) if stored.dtype == np.uint8 else data.max() + data.min() - data
    eight = data.astype(np.uint8) if stored.dtype == np.uint8 else _range8(data)
    if not alpha:
        return eight
    alpha8 = stored[..., -1] if stored.dtype == np.uint8 else (stored[..., -1] >> 8)
    return _flatten(eight, alpha8.astype(np.uint8))


LAYOUTS = list(itertools.product(DTYPES, PHOTOMETRIC, [None, "zlib"], ["<", ">"], [False, True]))


@pytest.mark.parametrize(
    ("dtype", "photometric", "compression", "byteorder", "alpha"),
    LAYOUTS,
    ids=[
        f"{d}-{p}-{c or 'raw'}-{'le' if b == '<' else 'be'}{'-alpha' if a else ''}"
        for d, p, c, b, a in LAYOUTS
    ],
)
def test_tiff_layout_is_decoded_as_tifffile_reads_it_or_refused(
    tmp_path, dtype, photometric, compression, byteorder, alpha
):
    channels = (3 if photometric == "rgb" else 1) + alpha
    shape = (40, 30, channels) if channels > 1 else (40, 30)
    path = tmp_path / "layout.tif"
    try:
        tifffile.imwrite(
            path,
            _samples(dtype, shape, seed=len(tmp_path.name)),
            photometric=photometric,
            compression=compression,
            byteorder=byteorder,
            extrasamples=[2] if alpha else None,
        )
    except ValueError as exc:
        pytest.skip(f"tifffile does not write this layout ({exc})")
    stored = tifffile.imread(path)
    try:
        got = _load(path)
    except InputError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text
        assert alpha or byteorder == ">" or (dtype, photometric) not in MUST_READ, text
        return
    _assert_within_one_level(got, _reference(stored, photometric, alpha))


def test_16_bit_rgb_tiff_with_separate_planes_is_refused(tmp_path):
    path = tmp_path / "planes.tif"
    planes = _samples("uint16", (3, 40, 30), seed=3)
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    with pytest.raises(InputError, match="separate colour planes"):
        _load(path)


def test_8_bit_rgb_tiff_with_separate_planes_is_read(tmp_path):
    path = tmp_path / "planes.tif"
    planes = _samples("uint8", (3, 40, 30), seed=4)
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(_load(path), np.moveaxis(tifffile.imread(path), 0, -1))


# --- 16-bit colour PNG --------------------------------------------------------------------


def _write_png16(path: Path, samples: np.ndarray, greyscale: bool, alpha: bool) -> Path:
    height, width = samples.shape[:2]
    writer = png.Writer(width, height, greyscale=greyscale, alpha=alpha, bitdepth=16)
    with path.open("wb") as handle:
        writer.write(handle, samples.reshape(height, -1).tolist())
    return path


def _read_png16(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).read()
    return np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(
        height, width, info["planes"]
    )


@pytest.mark.parametrize(
    ("kind", "planes"), [("rgb", 3), ("rgba", 4), ("gray-alpha", 2)], ids=["rgb", "rgba", "la"]
)
def test_16_bit_colour_png_holding_12_bit_data_matches_pypng(tmp_path, kind, planes):
    """Pillow keeps the high byte of each 16-bit colour sample: 12-bit data became 0..15."""
    samples = _samples("uint16", (48, 40, planes), seed=planes) % 4096
    if kind != "rgb":
        samples[..., -1] = np.linspace(0, 65535, 40).round().astype(np.uint16)
    path = _write_png16(tmp_path / f"{kind}.png", samples, kind == "gray-alpha", kind != "rgb")
    stored = _read_png16(path)
    np.testing.assert_array_equal(stored, samples)  # pypng reads back what it wrote
    want = _reference(stored, "minisblack", alpha=kind != "rgb")
    got = _load(path)
    _assert_within_one_level(got, want)
    assert got.max() >= 250  # the full range, not 0..15


def test_16_bit_rgb_png_of_a_gray_picture_equals_the_16_bit_gray_png(tmp_path, make_phantom):
    deep = make_phantom(64, 48, seed=5, depth=4095)
    gray = _write_png16(tmp_path / "gray.png", deep[..., None], greyscale=True, alpha=False)
    rgb = _write_png16(tmp_path / "rgb.png", np.dstack([deep] * 3), greyscale=False, alpha=False)
    np.testing.assert_array_equal(_load(rgb), np.stack([_load(gray)] * 3, axis=-1))
