"""DICOM input, from files pydicom writes during the test (tests/dicom_files.py, [dicom] extra)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
import tracemalloc  # noqa: E402

from dicom_files import (  # noqa: E402
    COMPREHENSIVE_SR,
    ramp,
    rewrite,
    write_dicom,
    write_rgb_dicom,
)
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from btxrd.runtime.decode.image import load_image  # noqa: E402
from btxrd.runtime.errors import InputError  # noqa: E402
from btxrd.runtime.settings import DecodeLimits  # noqa: E402


def test_12_bit_data_is_scaled_by_its_range_not_clipped(tmp_path: Path) -> None:
    decoded = load_image(write_dicom(tmp_path / "a.dcm", ramp()))
    pixels = np.asarray(decoded.image)
    assert decoded.image.mode == "L" and decoded.source_mode == "DICOM"
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels[0].astype(int)) >= 0)  # still a ramp, not a clipped plateau


def test_window_centre_and_width_apply_after_rescale(tmp_path: Path) -> None:
    # Stored 0..4095, rescaled by 2x - 1000 to -1000..7190; a window of 1000 +- 500 shows only
    # stored values 750..1250 (rescaled 500..1500) as a gradient.
    path = write_dicom(
        tmp_path / "w.dcm",
        ramp(),
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=1000,
    )
    decoded = load_image(path)
    row = np.asarray(decoded.image)[0].astype(int)
    stored = ramp()[0].astype(float)
    assert (row[stored * 2 - 1000 <= 490] == 0).all()
    assert (row[stored * 2 - 1000 >= 1510] == 255).all()
    assert any("window" in note for note in decoded.notes)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    mono2 = np.asarray(load_image(write_dicom(tmp_path / "m2.dcm", ramp())).image)
    mono1 = np.asarray(
        load_image(
            write_dicom(tmp_path / "m1.dcm", ramp(), PhotometricInterpretation="MONOCHROME1")
        ).image
    )
    assert np.array_equal(mono1, 255 - mono2)


def test_dicom_without_pixels_is_refused_by_name(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", None, sop_class=COMPREHENSIVE_SR)
    with pytest.raises(InputError, match="has no image"):
        load_image(path)


# As where only the [dicom] extra is installed: the pylibjpeg plugins and pyjpegls hidden, in a
# process of its own (the [dicom-node] extra installs them here).
_WITHOUT_DECODERS = """
import sys
for name in ("openjpeg", "pylibjpeg", "libjpeg", "jpeg_ls", "rle"):
    sys.modules[name] = None
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import InputError
try:
    load_image(sys.argv[1])
except InputError as exc:
    print(exc)
"""


def _message_without_decoders(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DECODERS, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_compressed_dicom_without_a_decoder_names_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip("pydicom.pixels")
    path = write_dicom(tmp_path / "j2k.dcm", ramp(), syntax=JPEG2000Lossless)
    assert "pip install pylibjpeg" in _message_without_decoders(path)


def test_dicom_detected_by_magic_without_suffix(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scan", ramp())
    assert load_image(path).source_mode == "DICOM"


def _pixels(path: Path, limits: DecodeLimits | None = None) -> np.ndarray:
    return np.asarray(load_image(path, limits).image)


# --- window values that cannot be applied -----------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom, on NaN and inf
@pytest.mark.parametrize(
    ("centre", "width", "shown"),
    [
        ("NaN", 400, "centre nan, width 400"),
        (1000, "inf", "centre 1000, width inf"),
        ("", 400, "centre empty, width 400"),
        (1000, "", "centre 1000, width empty"),
        (1000, 0, "width 0 < 1"),
        (1000, -5, "width -5 < 1"),
    ],
    ids=["centre-nan", "width-inf", "centre-empty", "width-empty", "width-0", "width-negative"],
)
def test_unusable_window_is_ignored_with_a_note(tmp_path: Path, centre, width, shown) -> None:
    """A NaN centre or an infinite width gave a blank image; an empty centre an internal error."""
    plain = _pixels(write_dicom(tmp_path / "plain.dcm", ramp()))
    path = write_dicom(tmp_path / "w.dcm", ramp(), WindowCenter=centre, WindowWidth=width)
    decoded = load_image(path)
    np.testing.assert_array_equal(np.asarray(decoded.image), plain)
    assert any("DICOM window ignored" in n and shown in n for n in decoded.notes), decoded.notes


def test_window_function_sigmoid_is_applied(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "s.dcm", ramp(), WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID"
    )
    row = _pixels(path)[0].astype(float)
    stored = ramp()[0].astype(float)
    want = 255.0 / (1.0 + np.exp(-4.0 * (stored - 2048) / 1000))
    assert np.abs(row - want).max() <= 0.5 + 1e-9


# --- malformed pixel data is not a missing decoder ------------------------------------------

MALFORMED = {
    "pixel-data-short": {"PixelData": b"\0" * 100},
    "bits-allocated-12": {"BitsAllocated": 12},
    "bits-stored-over-allocated": {"BitsStored": 20},
    "pixel-representation-5": {"PixelRepresentation": 5},
    "samples-per-pixel-2": {"SamplesPerPixel": 2},
    "frames-beyond-the-data": {"NumberOfFrames": 1000},
    "rows-missing": {"Rows": None},
    "rgb-without-planar-configuration": {"SamplesPerPixel": 3},
    "photometric-unknown": {"PhotometricInterpretation": "FOO"},
}


@pytest.mark.parametrize("changes", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_uncompressed_dicom_says_malformed_never_install_a_decoder(
    tmp_path: Path, changes
) -> None:
    path = rewrite(write_dicom(tmp_path / "bad.dcm", ramp()), **changes)
    with pytest.raises(InputError) as caught:
        load_image(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    cause = text.removeprefix(f"{path}: ")
    assert "install" not in cause and "compressed" not in cause
    assert "malformed DICOM" in cause or "photometric interpretation 'FOO'" in cause


def test_compressed_dicom_with_every_decoder_missing_names_what_to_install(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "jls.dcm", ramp(), syntax=JPEGLSLossless)
    message = _message_without_decoders(path)
    assert re.search(r"compressed DICOM \(JPEG-LS.*no decoder installed", message), message


# --- colour ------------------------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_comes_out_as_the_rgb_it_was_made_from(tmp_path: Path, photometric) -> None:
    """pydicom already returns YBR as RGB; converting a second time shifted every colour."""
    rgb = np.dstack([ramp(top=255)] * 3).astype(np.uint8)
    rgb[..., 1] = rgb[..., 1][:, ::-1]
    rgb[..., 2] = 200
    path = write_rgb_dicom(tmp_path / "c.dcm", rgb, photometric)
    got = _pixels(path).astype(int)
    assert np.abs(got - rgb).max() <= 2  # YBR_FULL rounds each sample once


# --- sizes are checked from the header --------------------------------------------------------


def test_deflated_dicom_decodes_as_the_explicit_one(tmp_path: Path) -> None:
    explicit = _pixels(write_dicom(tmp_path / "e.dcm", ramp()))
    deflated = write_dicom(tmp_path / "d.dcm", ramp(), syntax=DeflatedExplicitVRLittleEndian)
    np.testing.assert_array_equal(_pixels(deflated), explicit)


def test_deflated_dicom_over_the_limit_is_refused_without_inflating_its_pixels(
    tmp_path: Path,
) -> None:
    """pydicom inflates a deflated file whole before reading a tag: the campaign's 219 KB file
    became 2.8 GB. Here 8 MB of pixels are refused after inflating the header only."""
    zeros = np.zeros((2000, 2000), np.uint16)
    zeros[0, 0] = 1
    path = write_dicom(tmp_path / "bomb.dcm", zeros, syntax=DeflatedExplicitVRLittleEndian)
    assert path.stat().st_size < 50_000
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="exceeds the limit of 1,000,000; refused before"):
            load_image(path, DecodeLimits(max_pixels=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak


def test_deflated_frames_count_against_the_limit(tmp_path: Path) -> None:
    frames = np.concatenate([ramp(64, 96)] * 4)  # 4 frames of 64 x 96
    path = write_dicom(
        tmp_path / "f.dcm", frames, syntax=DeflatedExplicitVRLittleEndian, NumberOfFrames=4
    )
    rewrite(path, Rows=64)
    assert _pixels(path, DecodeLimits(max_pixels=30_000)).shape == (64, 96)
    with pytest.raises(InputError, match=r"96 x 64 pixels x 4 frames exceeds the limit of 20,000"):
        _pixels(path, DecodeLimits(max_pixels=20_000))


def test_dicom_over_the_limit_is_refused_before_its_pixels_are_read(
    tmp_path: Path, monkeypatch
) -> None:
    import pydicom.pixels

    def never(*args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", never)
    path = write_dicom(tmp_path / "big.dcm", ramp())
    with pytest.raises(InputError, match="96 x 64 pixels exceeds the limit of 1,000"):
        load_image(path, DecodeLimits(max_pixels=1000))


def test_only_the_first_frame_is_decoded(tmp_path: Path) -> None:
    frames = np.concatenate([ramp(), ramp()[:, ::-1]])
    path = rewrite(write_dicom(tmp_path / "two.dcm", frames, NumberOfFrames=2), Rows=64)
    decoded = load_image(path)
    np.testing.assert_array_equal(
        np.asarray(decoded.image), _pixels(write_dicom(tmp_path / "one.dcm", ramp()))
    )
    assert "multi-frame DICOM: used frame 1 of 2" in decoded.notes


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
def test_non_finite_rescale_is_refused(tmp_path: Path, keyword) -> None:
    path = write_dicom(tmp_path / "r.dcm", ramp(), **{keyword: "NaN"})
    with pytest.raises(InputError, match=f"DICOM {keyword} is nan"):
        load_image(path)


def test_constant_dicom_is_blank(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "flat.dcm", np.full((64, 96), 700, np.uint16))
    with pytest.raises(InputError, match=r"the image is blank \(every pixel is 700\)"):
        load_image(path)
