"""Files ``btxrd-run`` used to classify without a word from the wrong pixels:
each is classified through the real command beside a PNG of the pixels an independent decoder
(tifffile, pypng, numpy on the DICOM values) says it holds, and both must score the same. Also:
libtiff's own stderr output is silenced, and memory stays bounded on small files that declare
large images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from reliability_support import (
    assert_one_clear_line,
    assert_scores_like_reference,
    peak_rss_kib,
    run_process,
)

tifffile = pytest.importorskip("tifffile")
png = pytest.importorskip("png")  # pypng


def _deep(height: int = 200, width: int = 160) -> np.ndarray:
    """12-bit data spanning exactly 0..4095: the range mapping has no .5 ties to round."""
    values = np.random.default_rng(7).integers(0, 4096, (height, width)).astype(np.uint16)
    values[0, 0], values[-1, -1] = 0, 4095
    return values


def _range8(values: np.ndarray) -> np.ndarray:
    data = values.astype(np.float64)
    low, high = data.min(), data.max()
    return np.rint((data - low) * 255.0 / (high - low)).astype(np.uint8)


# Each maker writes the case to ``path`` and returns the 8-bit pixels it must decode to,
# computed from the independent decoder's array.
Maker = Callable[[Path], np.ndarray]


def tiff_orientation(orientation: int, rows_per_strip: int | None) -> Maker:
    def make(path: Path) -> np.ndarray:
        stored = np.random.default_rng(orientation).integers(0, 256, (200, 160), dtype=np.uint8)
        tifffile.imwrite(
            path, stored, rowsperstrip=rows_per_strip, extratags=[(274, "H", 1, orientation, True)]
        )
        turn = {6: -1, 8: 1}[orientation]  # clockwise for 6, anticlockwise for 8
        return np.rot90(tifffile.imread(path), turn)

    return make


def png_16_bit_rgb(path: Path) -> np.ndarray:
    deep = _deep()
    picture = np.dstack([deep, deep[::-1], deep[:, ::-1]])
    with path.open("wb") as handle:
        png.Writer(160, 200, greyscale=False, bitdepth=16).write(
            handle, picture.reshape(200, -1).tolist()
        )
    _, _, rows, _ = png.Reader(filename=str(path)).read()
    return _range8(np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(200, 160, 3))


def tiff_white_is_zero_16(path: Path) -> np.ndarray:
    tifffile.imwrite(path, _deep(), photometric="miniswhite")
    stored = tifffile.imread(path).astype(np.float64)
    return _range8(stored.max() + stored.min() - stored)  # white is zero: invert


def tiff_samples(dtype: str, **options) -> Maker:
    def make(path: Path) -> np.ndarray:
        values = _deep().astype(np.int64)
        if dtype == "uint32":
            values = values * 1_000_000  # beyond 2**31: wrapped negative in Pillow's "I"
        elif dtype == "int8":
            values = values // 32 - 128  # -128..-1 and 0..127: wrapped as 128..255
        else:  # int16 big-endian, compressed: Pillow swapped libtiff's native bytes again
            values = values - 2048
        tifffile.imwrite(path, values.astype(dtype), **options)
        return _range8(tifffile.imread(path))

    return make


def png_big_text(path: Path) -> np.ndarray:
    pixels = np.random.default_rng(3).integers(0, 256, (200, 160), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (1 << 20) + "!", zip=True)  # 1 MB: over MAX_TEXT_CHUNK
    Image.fromarray(pixels).save(path, pnginfo=info)
    return pixels


def dicom_window(centre: object, width: object) -> Maker:
    def make(path: Path) -> np.ndarray:
        pytest.importorskip("pydicom")
        from dicom_files import write_dicom

        write_dicom(path, _deep(), WindowCenter=centre, WindowWidth=width)
        return _range8(_deep())  # the window is ignored: the real range is used

    return make


SAME = [
    # (id, file name, maker, note expected in the record or None)
    ("tiff-orientation-6", "o6.tif", tiff_orientation(6, None), "EXIF orientation 6"),
    ("tiff-orientation-8-strips", "o8.tif", tiff_orientation(8, 7), "EXIF orientation 8"),
    ("png-16-bit-rgb-12-bit-data", "rgb16.png", png_16_bit_rgb, None),
    ("tiff-16-bit-white-is-zero", "white.tif", tiff_white_is_zero_16, "WhiteIsZero inverted"),
    ("tiff-uint32", "u32.tif", tiff_samples("uint32"), None),
    ("tiff-int8", "i8.tif", tiff_samples("int8"), None),
    ("tiff-int16-big-endian-deflate", "be.tif", tiff_samples(">i2", compression="zlib"), None),
    ("png-1-mb-text-chunk", "text.png", png_big_text, None),
    ("dicom-window-centre-nan", "nan.dcm", dicom_window("NaN", 400), "window ignored"),
    ("dicom-window-width-inf", "inf.dcm", dicom_window(1000, "inf"), "window ignored"),
    ("dicom-window-centre-empty", "empty.dcm", dicom_window("", 400), "window ignored"),
]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom writing NaN and inf
@pytest.mark.parametrize(("name", "make", "note"), [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_file_scores_as_the_pixels_an_independent_decoder_reads(
    tiny_onnx, tmp_path, name, make, note
):
    case = tmp_path / name
    assert_scores_like_reference(tiny_onnx, case, make(case), tmp_path, note)


def test_libtiff_prints_nothing_of_its_own(tiny_onnx, good_images, tmp_path):
    """A damaged deflate strip: libtiff wrote "ZIPDecode: Decoding error ..." on stderr before
    btxrd's line. Only btxrd's line remains (a real process: libtiff writes to fd 2)."""
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, _deep(), compression="zlib")
    data = bytearray(path.read_bytes())
    for offset in range(200, len(data) - 200, 97):
        data[offset] ^= 0x55
    path.write_bytes(bytes(data))
    done = run_process("--model", tiny_onnx, "--quiet", good_images[0], path)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_one_clear_line(stderr, str(path), "corrupt or truncated")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], stderr  # with --quiet, nothing else


# --- memory -------------------------------------------------------------------------------


@pytest.fixture
def small_png(tmp_path) -> Path:
    path = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (200, 160), np.uint8)).save(path)
    return path


def test_deflated_dicom_bomb_is_refused_with_flat_memory(tiny_onnx, small_png, tmp_path):
    """220 KB declaring 10630 x 10630 16-bit pixels: refused from the header, never inflated
    (the campaign measured 2.8 GB before its refusal)."""
    pytest.importorskip("pydicom")
    from dicom_files import ramp, write_deflated_zeros, write_dicom

    bomb = write_deflated_zeros(tmp_path / "bomb.dcm", 10630, 10630)
    assert bomb.stat().st_size < 300_000
    # The baseline decodes a small DICOM, so pydicom's own imports count on both sides.
    small_dicom = write_dicom(tmp_path / "small.dcm", ramp(200, 160))
    base = peak_rss_kib("--model", tiny_onnx, "--quiet", small_dicom)
    # Inflating it would take 226 MB; a fresh process's own peak varies by about 20 MB run to run.
    assert peak_rss_kib("--model", tiny_onnx, "--quiet", bomb) < base + 100_000


@pytest.mark.slow
def test_16_bit_png_decodes_in_a_few_bytes_a_pixel(tiny_onnx, small_png, tmp_path):
    """A 6000 x 6000 16-bit PNG (a few MB on disk): the 16-bit image, its 8-bit result and bands
    of rows; the float64 copies of before took about 30 bytes a pixel (1 GB here)."""
    path = tmp_path / "big16.png"
    values = np.tile(np.arange(6000, dtype=np.uint16)[None, :] % 4096, (6000, 1))
    Image.fromarray(values).save(path, compress_level=1)
    base = peak_rss_kib("--model", tiny_onnx, "--quiet", small_png)
    extra = (peak_rss_kib("--model", tiny_onnx, "--quiet", path) - base) * 1024
    assert extra < 6 * values.size, f"{extra / values.size:.1f} bytes a pixel"
