"""DICOM input, from files pydicom writes during the test (tests/dicom_files.py, [dicom] extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from dicom_files import COMPREHENSIVE_SR, ramp, write_dicom  # noqa: E402
from pydicom.uid import JPEG2000Lossless  # noqa: E402

from btxrd.runtime.errors import InputError  # noqa: E402
from btxrd.runtime.imageio import load_image  # noqa: E402


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


def test_compressed_dicom_without_a_decoder_names_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip("pydicom.pixels")
    try:
        import openjpeg  # noqa: F401

        pytest.skip("a JPEG 2000 decoder is installed here")
    except ImportError:
        pass
    path = write_dicom(tmp_path / "j2k.dcm", ramp(), syntax=JPEG2000Lossless)
    with pytest.raises(InputError, match="pip install pylibjpeg"):
        load_image(path)


def test_dicom_detected_by_magic_without_suffix(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scan", ramp())
    assert load_image(path).source_mode == "DICOM"
